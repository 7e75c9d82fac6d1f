"""The throughput, latency and memory benchmark: ``make bench`` (or ``python -m bench.run``).

Nothing here is imported by the service; ``bench.peers`` must stay importable
from the peers' own virtual environments (standard library only at import time).
"""

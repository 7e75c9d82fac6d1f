"""Use cases that move records between ports: consume, process, publish, commit.

Imports only the standard library and ``domain``; brokers, metrics backends
and clocks arrive through the ports in ``application.ports``.
"""

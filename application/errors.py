"""Failures the use cases understand; adapters translate their client's exceptions into these."""


class SinkFull(Exception):
    """The producer's local queue is full: serve deliveries, then try again."""


class CommitFailed(Exception):
    """The group no longer lets this member commit (usually a rebalance took the partition)."""


class BrokerUnavailable(Exception):
    """The broker could not be reached in time; the caller keeps retrying."""


class UnsupportedOperation(Exception):
    """The selected adapter cannot do what the configuration asks (e.g. transactions)."""

"""Failures the use cases understand; adapters translate their client's exceptions into these."""


class SinkFull(Exception):
    """The producer's local queue is full: serve deliveries, then try again."""


class CommitFailed(Exception):
    """The group no longer lets this member commit (usually a rebalance took the partition)."""


class BrokerUnavailable(Exception):
    """The broker could not be reached in time; the caller keeps retrying."""


class TransactionAborted(Exception):
    """The transaction could not commit and was (or must be) aborted; the batch may be retried."""


class FatalBrokerError(Exception):
    """The client cannot continue (e.g. fenced by a newer instance): stop, and let a restart take over."""


class GroupInUse(Exception):
    """A consumer group still has active members, so its committed offsets cannot be deleted."""


class InvalidConfiguration(ValueError):
    """A client setting the broker library refuses: a user's mistake, reported without a traceback."""


class UnsupportedOperation(Exception):
    """The selected adapter cannot do what the configuration asks (e.g. transactions)."""

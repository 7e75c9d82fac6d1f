"""Failures the use cases understand; adapters translate their client's exceptions into these.

The contract is closed: every exception a port raises is a PipelineError, and no exception of a
client library crosses a port. What each class means for the caller:

* BrokerUnavailable, and its AuthenticationFailed, TlsFailed and SecurityProtocolMismatch: the cluster
  cannot be used now.
  Retry with backoff (credentials and certificates get rotated); say why once, then remind.
* NotAuthorized: the cluster refuses this principal an operation; retrying cannot help until an
  operator grants it. Stop with exit status 3.
* InvalidConfiguration: a setting's value is impossible; stop before anything starts (status 2).
* FatalBrokerError: this client cannot continue (fenced, say); stop and let a restart take over.
"""

from __future__ import annotations


class PipelineError(Exception):
    """The root of every failure a port may raise."""


class SinkFull(PipelineError):
    """The producer's local queue is full: serve deliveries, then try again."""


class CommitFailed(PipelineError):
    """The group no longer lets this member commit (usually a rebalance took the partition)."""


class BrokerUnavailable(PipelineError):
    """The broker could not be reached in time; the caller keeps retrying."""

    def summary(self) -> str:
        """The cause in one line, as /readyz and the log say it, with what to check."""
        text = str(self)
        hint = "" if "check " in text else " (check KAFKA_BOOTSTRAP_SERVERS, and that the cluster is up)"
        return f"broker unreachable: {text}{hint}"


class AuthenticationFailed(BrokerUnavailable):
    """The cluster answers but refuses the login (wrong SASL user or password, say).

    The message names the user, the mechanism and the settings to check.
    """

    def summary(self) -> str:
        return str(self)


class SecurityProtocolMismatch(BrokerUnavailable):
    """The broker closes every connection before answering: its listener most likely expects TLS or SASL.

    A cause of its own, so that the log says it as soon as the client can tell it from an outage.
    """

    def summary(self) -> str:
        return str(self)


class TlsFailed(BrokerUnavailable):
    """The TLS handshake with the cluster fails (an unknown CA, a refused client certificate ...).

    The message names the cause and the settings to check.
    """

    def summary(self) -> str:
        return str(self)


class NotAuthorized(PipelineError):
    """The cluster refuses this principal an operation on a resource (no ACL grants it)."""

    def __init__(self, operation: str, resource_type: str, resource_name: str, principal: str = "") -> None:
        super().__init__(operation, resource_type, resource_name, principal)
        self.operation = operation
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.principal = principal

    def __str__(self) -> str:
        who = self.principal or "this client's principal"
        grantee = self.principal if self.principal.startswith("User:") else "User:<principal>"
        option = "--cluster" if self.resource_type == "cluster" else f"--{self.resource_type} {self.resource_name}"
        return (
            f'not authorized to {self.operation} {self.resource_type} "{self.resource_name}" as {who}: '
            f"grant it with kafka-acls --add --allow-principal {grantee} --operation {self.operation} {option}"
        )


class TransactionAborted(PipelineError):
    """The transaction could not commit and was (or must be) aborted; the batch may be retried."""


class FatalBrokerError(PipelineError):
    """The client cannot continue (e.g. fenced by a newer instance): stop, and let a restart take over."""


class GroupInUse(PipelineError):
    """A consumer group still has active members, so its committed offsets cannot be deleted."""


class InvalidConfiguration(PipelineError, ValueError):
    """A client setting the broker library refuses: a user's mistake, reported without a traceback."""


class UnsupportedOperation(PipelineError):
    """The selected adapter cannot do what the configuration asks (e.g. transactions)."""

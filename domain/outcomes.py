"""The two things that can become of a raw record: processed or rejected."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.model import LoginEvent


class RejectReason(StrEnum):
    """Stable reason codes: they travel in DLQ headers and metric labels, so never rename one."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_APP_VERSION = "invalid_app_version"
    APP_VERSION_TOO_OLD = "app_version_too_old"
    INVALID_IP = "invalid_ip"
    NON_PUBLIC_IP = "non_public_ip"
    INVALID_TIMESTAMP = "invalid_timestamp"


@dataclass(frozen=True, slots=True)
class Processed:
    event: LoginEvent


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str


Outcome = Processed | Rejected

"""Validation policies: small objects, each owning one family of rules.

A policy looks at the decoded JSON object and returns a Rejected outcome or
None. The processing service runs them in order and stops at the first
rejection, so each policy may assume the ones before it passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from domain.model import parse_epoch_seconds
from domain.network import AddressClass, classify_address
from domain.outcomes import Rejected, RejectReason
from domain.versions import AppVersion

REQUIRED_FIELDS = ("user_id", "app_version", "device_type")
OPTIONAL_STRING_FIELDS = ("locale", "device_id", "ip")
DEFAULT_MINIMUM_APP_VERSION = AppVersion.parse("2.0.0")
_SHOWN_VALUE_LIMIT = 64
_VERSION_CACHE_SIZE = 4096


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for messages a producer team will read."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shown(value: str) -> str:
    """A value quoted for a rejection detail, cut short so headers stay small."""
    if len(value) > _SHOWN_VALUE_LIMIT:
        value = value[:_SHOWN_VALUE_LIMIT] + "..."
    return repr(value)


class ValidationPolicy(Protocol):
    def check(self, record: Mapping[str, object]) -> Rejected | None: ...


@dataclass(frozen=True, slots=True)
class RequiredFields:
    """Absent, null, empty and whitespace-only all mean the producer did not send the field."""

    fields: tuple[str, ...] = REQUIRED_FIELDS

    def check(self, record: Mapping[str, object]) -> Rejected | None:
        for name in self.fields:
            value = record.get(name)
            if value is None:
                state = "null" if name in record else "absent"
                return Rejected(RejectReason.MISSING_FIELD, f"{name} is {state}")
            if type(value) is str and not value.strip():
                return Rejected(RejectReason.MISSING_FIELD, f"{name} is empty")
        return None


@dataclass(frozen=True, slots=True)
class StringFields:
    """Fields that, when present, must be JSON strings (null included: present but not a string)."""

    fields: tuple[str, ...] = REQUIRED_FIELDS + OPTIONAL_STRING_FIELDS

    def check(self, record: Mapping[str, object]) -> Rejected | None:
        for name in self.fields:
            if name in record:
                value = record[name]
                if type(value) is not str:
                    return Rejected(RejectReason.INVALID_FIELD, f"{name} must be a string, got {json_type_name(value)}")
        return None


@dataclass(frozen=True, slots=True)
class AppVersionPolicy:
    """Version format always; age only when a minimum is configured.

    A fleet reports a few dozen distinct versions, so verdicts are cached by
    the version string (bounded, in case a producer sends garbage).
    """

    minimum: AppVersion | None = DEFAULT_MINIMUM_APP_VERSION
    _verdicts: dict[str, Rejected | None] = field(default_factory=dict, compare=False, repr=False)

    def check(self, record: Mapping[str, object]) -> Rejected | None:
        value = record.get("app_version")
        if type(value) is not str:
            return None  # absence and type are the other policies' business
        try:
            return self._verdicts[value]
        except KeyError:
            verdict = self._judge(value)
            if len(self._verdicts) >= _VERSION_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[value] = verdict
            return verdict

    def _judge(self, value: str) -> Rejected | None:
        try:
            version = AppVersion.parse(value)
        except ValueError:
            return Rejected(
                RejectReason.INVALID_APP_VERSION,
                f"app_version {shown(value)} is not 1 to 4 dot-separated non-negative integers",
            )
        if self.minimum is not None and version < self.minimum:
            return Rejected(
                RejectReason.APP_VERSION_TOO_OLD, f"app_version {shown(value)} is below the minimum {self.minimum}"
            )
        return None


@dataclass(frozen=True, slots=True)
class IpAddressPolicy:
    """An empty ip means "not sent"; anything else must be a (by default public) address."""

    require_public: bool = True

    def check(self, record: Mapping[str, object]) -> Rejected | None:
        value = record.get("ip")
        if type(value) is not str or value == "":
            return None
        address_class = classify_address(value)
        if address_class is AddressClass.INVALID:
            return Rejected(RejectReason.INVALID_IP, f"ip {shown(value)} is not an IPv4 or IPv6 address")
        if self.require_public and address_class is AddressClass.NON_PUBLIC:
            return Rejected(RejectReason.NON_PUBLIC_IP, f"ip {shown(value)} is not a public address")
        return None


@dataclass(frozen=True, slots=True)
class TimestampPolicy:
    def check(self, record: Mapping[str, object]) -> Rejected | None:
        if "timestamp" not in record:
            return None
        value = record["timestamp"]
        if parse_epoch_seconds(value) is None:
            what = shown(value) if type(value) is str else f"a {json_type_name(value)} ({value!r:.40})"
            return Rejected(
                RejectReason.INVALID_TIMESTAMP,
                f"timestamp {what} is not non-negative epoch seconds (an integer or a string of digits)",
            )
        return None


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """Which policies run and how they are tuned; every field maps to one configuration setting."""

    required_fields: tuple[str, ...] = REQUIRED_FIELDS
    check_field_types: bool = True
    check_app_version: bool = True
    minimum_app_version: AppVersion | None = DEFAULT_MINIMUM_APP_VERSION
    check_ip: bool = True
    require_public_ip: bool = True
    check_timestamp: bool = True
    extra_policies: tuple[ValidationPolicy, ...] = field(default=())


def build_policies(settings: RuleSettings) -> Sequence[ValidationPolicy]:
    """The default rule chain, cheapest and most fundamental checks first."""
    policies: list[ValidationPolicy] = []
    if settings.required_fields:
        policies.append(RequiredFields(settings.required_fields))
    if settings.check_field_types:
        string_fields = tuple(dict.fromkeys(settings.required_fields + REQUIRED_FIELDS + OPTIONAL_STRING_FIELDS))
        policies.append(StringFields(string_fields))
    if settings.check_app_version:
        policies.append(AppVersionPolicy(settings.minimum_app_version))
    if settings.check_ip:
        policies.append(IpAddressPolicy(settings.require_public_ip))
    if settings.check_timestamp:
        policies.append(TimestampPolicy())
    policies.extend(settings.extra_policies)
    return policies

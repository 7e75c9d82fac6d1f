"""The event contract as marshmallow schemas: load and validate, dump, and export as JSON Schema.

This is the documented, declarative statement of the rules. The per-message
hot path uses the domain's hand-written policies instead (about ten times
cheaper); tests/unit/test_schema_agreement.py proves with generated inputs
that both accept the same records, give a shared reason for the rest, and
produce the same transformed event.

Every error message starts with its reason code (``missing_field: ...``), so
marshmallow's error dictionaries translate back to the domain's vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from marshmallow import INCLUDE, Schema, ValidationError, fields, post_load, validates_schema

from domain.model import parse_epoch_seconds
from domain.network import AddressClass, classify_address
from domain.outcomes import RejectReason
from domain.policies import REQUIRED_FIELDS, RuleSettings
from domain.versions import AppVersion

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _message(reason: RejectReason, text: str) -> str:
    return f"{reason.value}: {text}"


def _required(name: str, typed: bool) -> fields.Field[Any]:
    missing = RejectReason.MISSING_FIELD
    field_class = fields.String if typed else fields.Raw
    return field_class(
        required=True,
        error_messages={
            "required": _message(missing, f"{name} is absent"),
            "null": _message(missing, f"{name} is null"),
            "invalid": _message(RejectReason.INVALID_FIELD, f"{name} must be a string"),
        },
        metadata={"description": f"Required and non-blank ({name})."},
    )


def _optional_string(name: str, description: str) -> fields.String:
    invalid = RejectReason.INVALID_FIELD
    return fields.String(
        error_messages={
            "null": _message(invalid, f"{name} must be a string, got null"),
            "invalid": _message(invalid, f"{name} must be a string"),
        },
        metadata={"description": description},
    )


class EpochSeconds(fields.Field[Any]):
    """Non-negative epoch seconds, sent as a JSON integer or a string of digits; loaded as an int.

    With ``validate_value=False`` (timestamp checks switched off) a convertible
    value is still converted, and anything else passes through untouched.
    """

    def __init__(self, *, validate_value: bool = True, **kwargs: Any) -> None:
        super().__init__(allow_none=not validate_value, **kwargs)
        self.validate_value = validate_value

    default_error_messages = {  # noqa: RUF012 - marshmallow's own convention
        "invalid": _message(RejectReason.INVALID_TIMESTAMP, "timestamp must be non-negative epoch seconds"),
        "null": _message(RejectReason.INVALID_TIMESTAMP, "timestamp must not be null"),
    }

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        seconds = parse_epoch_seconds(value)
        if seconds is None:
            if self.validate_value:
                raise self.make_error("invalid")
            return value
        return seconds

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class _LoginEventBase(Schema):
    """Rules that depend on settings are checked in ``_rules`` so one class serves every configuration."""

    rules = RuleSettings()

    class Meta:
        unknown = INCLUDE  # forward compatible: unknown fields pass through

    @validates_schema(skip_on_field_errors=False)
    def _rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name in self.rules.required_fields:
            value = data.get(name)
            if isinstance(value, str) and not value.strip():
                errors.setdefault(name, []).append(_message(RejectReason.MISSING_FIELD, f"{name} is empty"))
        version = data.get("app_version")
        if self.rules.check_app_version and isinstance(version, str):
            try:
                parsed = AppVersion.parse(version)
            except ValueError:
                errors.setdefault("app_version", []).append(
                    _message(RejectReason.INVALID_APP_VERSION, "app_version must be 1 to 4 dot-separated integers")
                )
            else:
                minimum = self.rules.minimum_app_version
                if minimum is not None and parsed < minimum:
                    errors.setdefault("app_version", []).append(
                        _message(RejectReason.APP_VERSION_TOO_OLD, f"app_version is below {minimum}")
                    )
        address = data.get("ip")
        if self.rules.check_ip and isinstance(address, str) and address:
            address_class = classify_address(address)
            if address_class is AddressClass.INVALID:
                errors.setdefault("ip", []).append(_message(RejectReason.INVALID_IP, "ip is not an IP address"))
            elif address_class is AddressClass.NON_PUBLIC and self.rules.require_public_ip:
                errors.setdefault("ip", []).append(_message(RejectReason.NON_PUBLIC_IP, "ip is not public"))
        if errors:
            raise ValidationError(errors)

    @post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if isinstance(data.get("locale"), str):
            data["locale"] = data["locale"].lower()
        return data


def login_event_schema(rules: RuleSettings | None = None) -> Schema:
    """A schema class built for one configuration of the rules, instantiated."""
    rules = rules or RuleSettings()
    declared: dict[str, Any] = {"rules": rules}
    for name in rules.required_fields:
        declared[name] = _required(name, rules.check_field_types)
    if rules.check_field_types:
        for name in REQUIRED_FIELDS:
            declared.setdefault(name, _optional_string(name, f"String ({name})."))
        declared["locale"] = _optional_string("locale", "Locale, e.g. RU or pt_BR; published lower-cased.")
        declared["device_id"] = _optional_string("device_id", "Device identifier, e.g. 593-47-5928.")
        declared["ip"] = _optional_string("ip", "Public IPv4 or IPv6 address of the client; empty means unknown.")
    declared["timestamp"] = EpochSeconds(
        validate_value=rules.check_timestamp,
        metadata={"description": "Epoch seconds, as an integer or a string of digits; published as an integer."},
    )
    schema_class = type("LoginEventSchema", (_LoginEventBase,), declared)
    return cast(Schema, schema_class())


class ProcessedLoginEventSchema(Schema):
    """The published shape, for consumers of the output topic."""

    class Meta:
        unknown = INCLUDE

    user_id = fields.String(required=True)
    app_version = fields.String(required=True)
    device_type = fields.String(required=True)
    ip = fields.String()
    locale = fields.String(metadata={"description": "Lower-cased."})
    device_id = fields.String()
    timestamp = fields.Integer(strict=True, metadata={"description": "Epoch seconds."})
    processed_at = fields.String(required=True, metadata={"description": "RFC 3339 UTC time of processing."})


def reasons_from_errors(messages: Any) -> set[RejectReason]:
    """Reason codes found in a marshmallow error structure."""
    found: set[RejectReason] = set()
    stack = [messages]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            code = item.split(":", 1)[0]
            if code in RejectReason.__members__.values():
                found.add(RejectReason(code))
            elif item == "Invalid input type.":
                found.add(RejectReason.NOT_AN_OBJECT)
    return found


def validate(schema: Schema, document: object) -> tuple[dict[str, Any] | None, set[RejectReason]]:
    """(loaded event, set()) when valid, else (None, the reasons marshmallow found)."""
    if not isinstance(document, dict):
        return None, {RejectReason.NOT_AN_OBJECT}
    try:
        return schema.load(document), set()
    except ValidationError as error:
        return None, reasons_from_errors(error.messages) or {RejectReason.INVALID_FIELD}


def _property_schema(field: fields.Field[Any], name: str) -> dict[str, Any]:
    description = field.metadata.get("description")
    if isinstance(field, EpochSeconds):
        spec: dict[str, Any] = {
            "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}],
        }
    elif isinstance(field, fields.Integer):
        spec = {"type": "integer"}
    else:
        spec = {"type": "string"}
        if field.required:
            spec["pattern"] = r"\S"
    if name == "app_version" and isinstance(field, fields.String):
        spec["pattern"] = r"^[0-9]+(\.[0-9]+){0,3}$"
        description = f"{description or ''} Compared numerically with the configured minimum.".strip()
    if name == "ip" and isinstance(field, fields.String):
        spec["anyOf"] = [{"const": ""}, {"format": "ipv4"}, {"format": "ipv6"}]
    if description:
        spec["description"] = description
    return spec


def json_schema(schema: Schema, title: str) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) document for users' own validators and docs."""
    properties = {name: _property_schema(field, name) for name, field in schema.fields.items()}
    required = [name for name, field in schema.fields.items() if field.required]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": title,
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


def render_json_schema(processed: bool = False, rules: RuleSettings | None = None) -> str:
    if processed:
        document = json_schema(ProcessedLoginEventSchema(), "ProcessedUserLoginEvent")
    else:
        document = json_schema(login_event_schema(rules), "UserLoginEvent")
    return json.dumps(document, indent=2)


__all__ = [
    "EpochSeconds",
    "ProcessedLoginEventSchema",
    "json_schema",
    "login_event_schema",
    "reasons_from_errors",
    "render_json_schema",
    "validate",
]

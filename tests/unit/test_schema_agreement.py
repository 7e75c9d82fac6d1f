"""The marshmallow schema (the documented contract) and the domain's fast policies must agree.

For every generated record: both accept it or both reject it; when rejected,
the domain's reason is among the schema's; when accepted, the published event
equals the schema's load plus ``processed_at``.
"""

import json

import pytest
from hypothesis import given, settings

from adapters.schema import login_event_schema, validate
from domain.outcomes import Processed
from domain.policies import RuleSettings, build_policies
from domain.processing import LoginEventProcessor
from domain.versions import AppVersion
from tests.unit.strategies import event_like, json_values

STAMP = "2026-11-26T12:00:00.000Z"
CONFIGURATIONS = [
    RuleSettings(),
    RuleSettings(required_fields=("user_id",), require_public_ip=False, minimum_app_version=AppVersion.parse("2.4")),
    RuleSettings(check_timestamp=False, check_ip=False, minimum_app_version=None),
    RuleSettings(check_field_types=False, check_app_version=False),
]


def _agree(rules: RuleSettings, document: object) -> None:
    processor = LoginEventProcessor(build_policies(rules))
    outcome = processor.process(json.dumps(document).encode(), STAMP)
    loaded, reasons = validate(login_event_schema(rules), document)
    if isinstance(outcome, Processed):
        assert loaded is not None, f"schema rejected ({reasons}) what the domain accepted: {document!r}"
        assert {**loaded, "processed_at": STAMP} == outcome.event.fields
    else:
        assert loaded is None, f"schema accepted what the domain rejected ({outcome}): {document!r}"
        assert outcome.reason in reasons, f"domain {outcome.reason}, schema {reasons}: {document!r}"


@pytest.mark.parametrize("rules", CONFIGURATIONS, ids=["default", "tuned", "lenient", "untyped"])
@settings(max_examples=400, deadline=None)
@given(document=event_like)
def test_agree_on_event_shaped_records(rules: RuleSettings, document: dict[str, object]) -> None:
    _agree(rules, document)


@settings(max_examples=200, deadline=None)
@given(document=json_values)
def test_agree_on_any_json(document: object) -> None:
    _agree(RuleSettings(), document)

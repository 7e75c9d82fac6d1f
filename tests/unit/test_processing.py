"""Table-driven tests of every domain rule, through the processing service (with both codecs)."""

import json
from typing import Any

import pytest

from adapters.json_codec import OrjsonCodec
from domain.codec import StdlibJsonCodec
from domain.outcomes import Processed, Rejected, RejectReason
from domain.policies import RuleSettings, build_policies
from domain.processing import LoginEventProcessor
from domain.versions import AppVersion

STAMP = "2026-11-26T12:00:00.000Z"
GOOD: dict[str, Any] = {
    "user_id": "9fb93534-081c-4253-b1e2-73a87984a8ab",
    "app_version": "2.3.0",
    "device_type": "iOS",
    "ip": "84.115.150.27",
    "locale": "JP",
    "device_id": "453-41-9910",
    "timestamp": 1695018003,
}


@pytest.fixture(params=[StdlibJsonCodec, OrjsonCodec], ids=["stdlib", "orjson"])
def processor(request: pytest.FixtureRequest) -> LoginEventProcessor:
    return LoginEventProcessor(codec=request.param())


def variant(**changes: Any) -> bytes:
    record = dict(GOOD)
    for name, value in changes.items():
        if value is ABSENT:
            record.pop(name)
        else:
            record[name] = value
    return json.dumps(record).encode()


ABSENT = object()

REJECTIONS = [
    # malformed_json
    (b'{"user_id": "57f327d0-6b06-', RejectReason.MALFORMED_JSON),
    (b"", RejectReason.MALFORMED_JSON),
    (b"\xff\xfe{}", RejectReason.MALFORMED_JSON),
    (json.dumps(GOOD).encode("utf-16"), RejectReason.MALFORMED_JSON),
    (b'{"user_id": NaN}', RejectReason.MALFORMED_JSON),
    (b'{"a": Infinity}', RejectReason.MALFORMED_JSON),
    (b'{"a": 1e400}', RejectReason.MALFORMED_JSON),
    (b"{} {}", RejectReason.MALFORMED_JSON),
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), RejectReason.MALFORMED_JSON),
    (b'{"a": ' + b"[" * 600 + b"]" * 600 + b"}", RejectReason.MALFORMED_JSON),
    (b"[" * 100_000, RejectReason.MALFORMED_JSON),
    # not_an_object
    (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
    (b'"a string"', RejectReason.NOT_AN_OBJECT),
    (b"42", RejectReason.NOT_AN_OBJECT),
    (b"null", RejectReason.NOT_AN_OBJECT),
    (b"true", RejectReason.NOT_AN_OBJECT),
    # missing_field
    (variant(user_id=ABSENT), RejectReason.MISSING_FIELD),
    (variant(user_id=None), RejectReason.MISSING_FIELD),
    (variant(user_id=""), RejectReason.MISSING_FIELD),
    (variant(user_id=" \t\n"), RejectReason.MISSING_FIELD),
    (variant(app_version=None), RejectReason.MISSING_FIELD),
    (variant(app_version=""), RejectReason.MISSING_FIELD),
    (variant(device_type=ABSENT), RejectReason.MISSING_FIELD),
    (variant(device_type="   "), RejectReason.MISSING_FIELD),
    # invalid_field
    (variant(user_id=123), RejectReason.INVALID_FIELD),
    (variant(app_version=2.3), RejectReason.INVALID_FIELD),
    (variant(device_type=["iOS"]), RejectReason.INVALID_FIELD),
    (variant(locale=7), RejectReason.INVALID_FIELD),
    (variant(locale=None), RejectReason.INVALID_FIELD),
    (variant(device_id={"id": 1}), RejectReason.INVALID_FIELD),
    (variant(ip=False), RejectReason.INVALID_FIELD),
    (variant(ip=None), RejectReason.INVALID_FIELD),
    # invalid_app_version
    (variant(app_version="two.three"), RejectReason.INVALID_APP_VERSION),
    (variant(app_version="2.3.0.1.5"), RejectReason.INVALID_APP_VERSION),
    (variant(app_version="v2.3"), RejectReason.INVALID_APP_VERSION),
    (variant(app_version="2.3-beta"), RejectReason.INVALID_APP_VERSION),
    (variant(app_version="-2.3"), RejectReason.INVALID_APP_VERSION),
    # app_version_too_old
    (variant(app_version="1.9.8"), RejectReason.APP_VERSION_TOO_OLD),
    (variant(app_version="1.99.99.99"), RejectReason.APP_VERSION_TOO_OLD),
    (variant(app_version="0"), RejectReason.APP_VERSION_TOO_OLD),
    # invalid_ip
    (variant(ip="300.1.2.3"), RejectReason.INVALID_IP),
    (variant(ip="not-an-ip"), RejectReason.INVALID_IP),
    (variant(ip=" "), RejectReason.INVALID_IP),
    # non_public_ip
    (variant(ip="192.168.23.159"), RejectReason.NON_PUBLIC_IP),
    (variant(ip="127.0.0.1"), RejectReason.NON_PUBLIC_IP),
    (variant(ip="fd00::1"), RejectReason.NON_PUBLIC_IP),
    (variant(ip="203.0.113.5"), RejectReason.NON_PUBLIC_IP),
    # invalid_timestamp
    (variant(timestamp="soon"), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=-1), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=1695018003.5), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=1695018003.0), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=True), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=None), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=""), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp="-5"), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp="1.5"), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=" 12"), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp="١٢٣"), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp="9" * 5000), RejectReason.INVALID_TIMESTAMP),
    (variant(timestamp=[1]), RejectReason.INVALID_TIMESTAMP),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTIONS)
def test_rejects_with_reason(processor: LoginEventProcessor, raw: bytes, reason: RejectReason) -> None:
    outcome = processor.process(raw, STAMP)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason
    assert outcome.detail


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (variant(user_id=ABSENT), "user_id"),
        (variant(device_type=""), "device_type"),
        (variant(locale=3), "locale"),
        (variant(app_version="x"), "app_version"),
        (variant(ip="10.0.0.1"), "ip"),
        (variant(timestamp="x"), "timestamp"),
    ],
)
def test_detail_names_the_field(processor: LoginEventProcessor, raw: bytes, field: str) -> None:
    outcome = processor.process(raw, STAMP)
    assert isinstance(outcome, Rejected)
    assert field in outcome.detail


ACCEPTED = [
    variant(),
    variant(app_version="2.0.0"),
    variant(app_version="10.0.0"),
    variant(app_version="2"),
    variant(app_version="2.10"),
    variant(app_version="10.0.0.1"),
    variant(ip=ABSENT),
    variant(ip=""),
    variant(ip="2606:4700::1111"),
    variant(locale=ABSENT),
    variant(device_id=ABSENT),
    variant(timestamp=ABSENT),
    variant(timestamp="1695018003"),
    variant(timestamp=0),
    variant(timestamp=10**30),
]


@pytest.mark.parametrize("raw", ACCEPTED)
def test_accepts_valid_records(processor: LoginEventProcessor, raw: bytes) -> None:
    assert isinstance(processor.process(raw, STAMP), Processed)


def test_transformation(processor: LoginEventProcessor) -> None:
    raw = variant(locale="pt_BR", timestamp="1695018003", brand_new_field={"nested": [1, 2]}, device_type="iOS")
    outcome = processor.process(raw, STAMP)
    assert isinstance(outcome, Processed)
    published = json.loads(processor.encode(outcome.event))
    assert published == {
        **GOOD,
        "locale": "pt_br",
        "timestamp": 1695018003,
        "brand_new_field": {"nested": [1, 2]},
        "processed_at": STAMP,
    }


def test_big_integers_pass_through_exactly(processor: LoginEventProcessor) -> None:
    huge = 123456789012345678901234567890
    outcome = processor.process(variant(timestamp=huge, counter=-(2**70)), STAMP)
    assert isinstance(outcome, Processed)
    published = json.loads(processor.encode(outcome.event))
    assert published["timestamp"] == huge
    assert published["counter"] == -(2**70)


def test_policies_can_be_switched_off_and_tuned() -> None:
    lenient = LoginEventProcessor(
        build_policies(
            RuleSettings(
                required_fields=("user_id",),
                minimum_app_version=AppVersion.parse("3.0"),
                require_public_ip=False,
                check_timestamp=False,
            )
        )
    )
    assert isinstance(lenient.process(variant(device_type=ABSENT, app_version="3.1"), STAMP), Processed)
    assert isinstance(lenient.process(variant(ip="10.0.0.1"), STAMP), Rejected)  # 2.3.0 < 3.0
    assert isinstance(lenient.process(variant(ip="10.0.0.1", app_version="3.0"), STAMP), Processed)
    timeless = lenient.process(variant(app_version="3.0", timestamp="soon"), STAMP)
    assert isinstance(timeless, Processed)
    assert timeless.event.fields["timestamp"] == "soon"  # passed through untouched when not validated
    no_age = LoginEventProcessor(build_policies(RuleSettings(minimum_app_version=None)))
    assert isinstance(no_age.process(variant(app_version="0.1"), STAMP), Processed)
    no_version = LoginEventProcessor(build_policies(RuleSettings(check_app_version=False)))
    assert isinstance(no_version.process(variant(app_version="anything"), STAMP), Processed)

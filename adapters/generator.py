"""Synthetic user-login records shaped like the public data generator's, with labelled defects.

Each record carries the reason code the domain must give it (None for a good
one), so tests and the demo can check routing against ground truth. Seeded
runs are reproducible.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

APP_VERSIONS = ("2.3.0", "2.3.1", "2.4.0", "2.10.2", "3.0.0")
DEVICE_TYPES = ("android", "iOS")
LOCALES = ("US", "GB", "IN", "JP", "FR", "DE", "BR", "NG", "RU", "pt_BR", "es_MX", "ZA")
STRING_TIMESTAMP_SHARE = 0.2
_TRUNCATE_FROM = len('{"user_id": "') + 11  # the published samples send about one timestamp in five as a digit string

# One entry per defect: the reason it must produce, and how to break a good record that way.
DEFECTS: tuple[tuple[str, str], ...] = (
    ("malformed_json", "truncated"),
    ("malformed_json", "not_utf8"),
    ("not_an_object", "array"),
    ("missing_field", "no_device_type"),
    ("missing_field", "empty_user_id"),
    ("missing_field", "null_app_version"),
    ("invalid_field", "numeric_user_id"),
    ("invalid_app_version", "word_version"),
    ("app_version_too_old", "old_version"),
    ("invalid_ip", "bad_ip"),
    ("non_public_ip", "private_ip"),
    ("invalid_timestamp", "word_timestamp"),
    ("invalid_timestamp", "fraction_timestamp"),
)


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    key: bytes | None
    value: bytes
    expected_reason: str | None
    user_id: str


class LoginGenerator:
    def __init__(self, *, invalid_ratio: float = 0.1, seed: int | None = None, now: float | None = None) -> None:
        if not 0.0 <= invalid_ratio <= 1.0:
            raise ValueError("invalid_ratio must be between 0 and 1")
        self._rng = random.Random(seed)
        self._invalid_ratio = invalid_ratio
        self._now = int(now if now is not None else time.time())

    def _public_ipv4(self) -> str:
        rng = self._rng
        while True:
            first = rng.randint(1, 223)
            if first not in (10, 100, 127, 169, 172, 192, 198, 203):
                return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"

    def _good(self, user_id: str) -> dict[str, object]:
        rng = self._rng
        stamp = self._now - rng.randint(0, 30 * 86_400)
        return {
            "user_id": user_id,
            "app_version": rng.choice(APP_VERSIONS),
            "device_type": rng.choice(DEVICE_TYPES),
            "ip": self._public_ipv4(),
            "locale": rng.choice(LOCALES),
            "device_id": f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            "timestamp": str(stamp) if rng.random() < STRING_TIMESTAMP_SHARE else stamp,
        }

    def _break(self, record: dict[str, object], defect: str) -> bytes:
        rng = self._rng
        if defect == "truncated":
            # Cut somewhere after the first 11 characters of the UUID, as a broken producer would,
            # so that every truncated record still differs from the others.
            text = json.dumps(record)
            return text[: rng.randint(_TRUNCATE_FROM, len(text) - 2)].encode()
        if defect == "not_utf8":
            return json.dumps(record).encode()[:-1] + b"\xff}"
        if defect == "array":
            return json.dumps([record]).encode()
        changes: dict[str, dict[str, object]] = {
            "empty_user_id": {"user_id": ""},
            "null_app_version": {"app_version": None},
            "numeric_user_id": {"user_id": rng.randint(1, 10**6)},
            "word_version": {"app_version": "two.three"},
            "old_version": {"app_version": rng.choice(("1.9.8", "1.2", "0.9.1"))},
            "bad_ip": {"ip": rng.choice(("300.1.2.3", "not-an-ip", "1.2.3"))},
            "private_ip": {"ip": rng.choice(("192.168.1.20", "10.0.4.2", "127.0.0.1", "172.16.9.9"))},
            "word_timestamp": {"timestamp": "yesterday"},
            "fraction_timestamp": {"timestamp": 1695018003.5},
        }
        if defect == "no_device_type":
            record.pop("device_type")
        else:
            record.update(changes[defect])
        return json.dumps(record).encode()

    def record(self) -> GeneratedRecord:
        rng = self._rng
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        record = self._good(user_id)
        if rng.random() < self._invalid_ratio:
            reason, defect = rng.choice(DEFECTS)
            return GeneratedRecord(None, self._break(record, defect), reason, user_id)
        return GeneratedRecord(None, json.dumps(record).encode(), None, user_id)

    def records(self, count: int | None = None) -> Iterator[GeneratedRecord]:
        """``count`` records, or an endless stream when it is None."""
        produced = 0
        while count is None or produced < count:
            yield self.record()
            produced += 1

"""The README must not drift from the code it documents."""

import re
from pathlib import Path

from application import dead_letter
from domain.outcomes import RejectReason
from entrypoints.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_configuration_table_lists_every_setting_with_its_default() -> None:
    table = README.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    documented = {
        match.group(1): match.group(2) for match in re.finditer(r"^\| `([A-Z_]+)` \|[^|]*\| `([^`]*)` \|", table, re.M)
    }
    assert documented == {setting.name: setting.default for setting in SETTINGS}


def test_every_reason_code_is_documented() -> None:
    reasons = [reason.value for reason in RejectReason] + [dead_letter.PROCESSING_ERROR, dead_letter.PUBLISH_FAILED]
    for reason in reasons:
        assert f"| `{reason}` |" in README, reason


def test_every_dlq_header_is_documented() -> None:
    for header in dead_letter.DLQ_HEADERS:
        assert f"`{header}`" in README, header

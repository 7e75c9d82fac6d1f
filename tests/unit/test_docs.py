"""The README must not drift from the code it documents."""

import re
from pathlib import Path

from application import dlq_headers
from domain.outcomes import RejectReason
from entrypoints.config import SETTINGS, settings_table_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_configuration_table_is_the_generated_one() -> None:
    table = README.split("<!-- settings-table:start -->\n")[1].split("<!-- settings-table:end -->")[0]
    assert table == settings_table_markdown(), "regenerate it with: pipeline config --markdown"
    assert all(f"| `{setting.name}` |" in table for setting in SETTINGS)


def test_every_reason_code_is_documented() -> None:
    assert {reason.value for reason in RejectReason} < set(dlq_headers.REASONS)
    for reason in dlq_headers.REASONS:
        assert f"| `{reason}` |" in README, reason


def test_every_dlq_header_is_documented() -> None:
    for header in dlq_headers.DLQ_HEADERS:
        assert f"`{header}`" in README, header


def test_the_architecture_table_lists_every_module_once() -> None:
    section = README.split("<!-- architecture:start -->\n")[1].split("<!-- architecture:end -->")[0]
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.MULTILINE)
    root = Path(__file__).resolve().parents[2]
    modules = sorted(
        path.relative_to(root).as_posix()
        for package in ("domain", "application", "adapters", "entrypoints")
        for path in (root / package).rglob("*.py")
        if path.name != "__init__.py"
    )
    assert sorted(set(listed)) == sorted(listed), "a module is listed twice"
    assert sorted(set(modules) - set(listed)) == [], "add these to README.md's architecture table"
    assert sorted(set(listed) - set(modules)) == [], "these no longer exist: remove or rename them in the table"

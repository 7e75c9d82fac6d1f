"""``pipeline process`` never destroys data: outputs appear whole at the end, or not at all."""

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest
from dependency_injector import providers

from adapters.files import OutputFile
from entrypoints import cli
from entrypoints.commands import process as process_command
from entrypoints.config import Settings
from entrypoints.container import Container

SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "data" / "user-login-samples.jsonl"


class DiskFillsUp:
    """A stream over a real file that refuses writes once ``budget`` bytes are in it, as a full disk does."""

    def __init__(self, inner: BinaryIO, budget: int) -> None:
        self._inner = inner
        self._budget = budget
        self.name = inner.name

    def write(self, data: bytes) -> int:
        if len(data) > self._budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget -= len(data)
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()


def fills_up_after(budget: int, target_name: str) -> type[OutputFile]:
    class Filling(OutputFile):
        def open(self) -> BinaryIO:
            stream = super().open()
            return DiskFillsUp(stream, budget) if self.name == target_name else stream  # type: ignore[return-value]

    return Filling


@pytest.mark.parametrize("full", ["out", "dlq"])
def test_a_write_failing_mid_run_leaves_both_existing_files_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], full: str
) -> None:
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    out.write_text("yesterday's output\n")
    dlq.write_text("yesterday's dead letters\n")
    failing = str(out) if full == "out" else str(dlq)
    build_container = process_command.build_container

    def with_a_disk_that_fills_up(settings: Settings) -> Container:
        container = build_container(settings)
        container.output_file.override(providers.Factory(fills_up_after(20_000, failing)))
        return container

    monkeypatch.setattr(process_command, "build_container", with_a_disk_that_fills_up)

    status = cli.main(["process", str(SAMPLES), "--out", str(out), "--dlq", str(dlq)])

    assert status == 1
    assert out.read_text() == "yesterday's output\n"
    assert dlq.read_text() == "yesterday's dead letters\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dlq.jsonl", "out.jsonl"], "temporary files removed"
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"pipeline: error: cannot write {failing}: No space left on device"
                      " (files that existed before were left as they were)"]  # fmt: skip


def test_an_unreadable_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "in.jsonl"
    secret.write_text("{}\n")
    real_open = Path.open

    def refusing_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == secret:  # root reads anything, so chmod cannot make this case on every machine
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refusing_open)
    status = cli.main(["process", str(secret), "--out", str(tmp_path / "o"), "--dlq", str(tmp_path / "d")])
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [f"pipeline: error: cannot read {secret}: Permission denied"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.jsonl"]


def test_output_file_appears_only_on_commit_and_discard_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    first = OutputFile(target)
    first.open().write(b"new\n")
    assert target.read_text() == "old\n"
    first.discard()
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    second = OutputFile(target)
    second.open().write(b"new\n")
    second.commit()
    second.discard()  # after a commit, nothing to drop
    assert target.read_text() == "new\n" and sorted(tmp_path.iterdir()) == [target]


def test_output_file_through_a_symlink_replaces_the_file_it_points_to(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    output = OutputFile(link)
    output.open().write(b"new\n")
    output.commit()
    assert link.is_symlink() and real.read_text() == "new\n"


def test_a_new_output_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        output = OutputFile(tmp_path / "new.jsonl")
        output.open().write(b"x\n")
        output.commit()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.jsonl").stat().st_mode) == 0o644

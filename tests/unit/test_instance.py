"""Instance slots: unique among live processes on a host, taken back after a crash."""

import os
import subprocess
import sys
from pathlib import Path

from entrypoints.config import load_settings
from entrypoints.instance import claim_slot

CLAIM = (
    "import sys; from pathlib import Path; from entrypoints.instance import claim_slot; "
    "print(claim_slot('g.t', Path(sys.argv[1])))"
)


def test_live_processes_get_different_slots_and_a_restart_gets_its_slot_back(tmp_path: Path) -> None:
    assert claim_slot("g.t", tmp_path) == 0
    assert claim_slot("g.t", tmp_path) == 0  # the same process keeps its slot
    other = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "1"  # slot 0 is held by this test process
    again = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path)], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == "1"  # the first child exited: its slot is free again


def test_scopes_are_independent(tmp_path: Path) -> None:
    other = subprocess.run([sys.executable, "-c", CLAIM.replace("'g.t'", "'other.scope'"), str(tmp_path)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert other.stdout.strip() == "0"


def test_without_a_slot_the_process_id_keeps_transactional_ids_apart(tmp_path: Path) -> None:
    assert claim_slot("no.dir", tmp_path / "missing") is None
    settings = load_settings(environ={})
    assert settings.effective_transactional_id(None).endswith(f".pid{os.getpid()}")
    assert settings.effective_transactional_id(3).endswith(".3")
    assert load_settings(environ={"TRANSACTIONAL_ID": "tx"}).for_worker(2).effective_transactional_id(0) == "tx.2"

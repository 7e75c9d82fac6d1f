"""The layer rules of README.md (section Architecture), executable: a violation fails the test suite.

The rules themselves are the import-linter contracts in pyproject.toml ([tool.importlinter]).
"""

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "application", "adapters", "entrypoints")
PURE = ("domain", "application")
LAYERS_CONTRACT = "Layers: entrypoints wire adapters, adapters implement application ports, application drives domain"
STDLIB_CONTRACT = "Domain and application import only the standard library (and each other)"
CONTAINER_CONTRACT = "Commands and the CLI take adapters from the container only"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
INDEPENDENCE_CONTRACT = "Broker adapters are independent: confluent, kafka-python and in-memory never import each other"


def _lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
        cwd=project, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(project)},
    )  # fmt: skip


def test_import_linter_contracts_are_kept() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout


def test_domain_and_application_import_only_the_standard_library() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)
    offenders = {}
    for package in PURE:
        for module in graph.find_children(package) | graph.find_descendants(package) | {package}:
            for imported in graph.find_modules_directly_imported_by(module):
                top = imported.split(".")[0]
                if top not in sys.stdlib_module_names and top not in PURE:
                    offenders.setdefault(module, set()).add(imported)
    assert offenders == {}


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("domain/model.py", "import marshmallow  # noqa", STDLIB_CONTRACT),
        ("domain/model.py", "import application.ports  # noqa", LAYERS_CONTRACT),
        ("application/at_least_once.py", "import adapters.memory  # noqa", LAYERS_CONTRACT),
        ("adapters/files.py", "import entrypoints.config  # noqa", LAYERS_CONTRACT),
        ("entrypoints/commands/demo.py", "import adapters.generator  # noqa", CONTAINER_CONTRACT),
        ("entrypoints/cli.py", "from adapters.logging import configure_logging  # noqa", CONTAINER_CONTRACT),
        ("adapters/memory/sink.py", "import adapters.kafka_python.config  # noqa", INDEPENDENCE_CONTRACT),
        ("adapters/confluent/admin.py", "import adapters.memory.broker  # noqa", INDEPENDENCE_CONTRACT),
    ],
)
def test_the_contracts_catch_a_planted_violation(tmp_path: Path, module: str, line: str, broken: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(line + "\n" + target.read_text())
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    verdicts = " ".join(result.stdout.split())  # import-linter wraps long contract names
    assert f"{broken} BROKEN" in verdicts


def test_kafka_connection_is_imported_from_one_module_only() -> None:
    """One import path per name: the connection settings live in adapters/kafka_connection.py."""
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts or ".cache" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and any(alias.name == "KafkaConnection" for alias in node.names)
                and node.module != "adapters.kafka_connection"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
    assert offenders == []

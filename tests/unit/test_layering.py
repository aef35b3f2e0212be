"""The import-linter contracts of pyproject.toml (run by `make test`) catch what they promise.

Each case copies the packages into a temporary directory, plants one violation,
and runs ``lint-imports`` there: the contract that guards against it must break.
The unchanged copy must keep every contract, so a broken case is the planted
import's doing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from worker.sandbox.policy import PACKAGES as SANDBOX_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES: list[str] = CONFIG["root_packages"]
NAMES = {contract["type"]: contract["name"] for contract in CONFIG["contracts"]}
LAYERS, KERNEL, ACYCLIC = NAMES["layers"], NAMES["forbidden"], NAMES["acyclic_siblings"]


def lint(tree: Path) -> tuple[int, str]:
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    # The copy, not the installed (editable) packages: PYTHONPATH comes first on sys.path.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


def plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_packages_keep_every_contract(tree: Path) -> None:
    code, out = lint(tree)
    assert code == 0, out
    for name in (LAYERS, KERNEL, ACYCLIC):
        assert f"{name} KEPT" in out, out
    # A copy that lacked a package would pass vacuously: the report counts what it read.
    analyzed = int(out.split("Analyzed ")[1].split(" files")[0])
    assert analyzed >= sum(1 for p in PACKAGES for _ in (tree / p).rglob("*.py"))


@pytest.mark.parametrize(("module", "line", "broken"), [
    # The kernel reaching up into a domain package.
    ("common/clock.py", "from auth import permissions", {LAYERS, KERNEL}),
    # A domain reaching up into a process, and a lower domain into a higher one.
    ("jobs/spec.py", "import scheduler.inbox", {LAYERS}),
    ("auth/tokens.py", "import vault.crypto", {LAYERS}),
    # The API on the CLI's client again.
    ("api/services.py", "import gristmill.client", {LAYERS}),
    # Two processes that must not know each other.
    ("worker/worker.py", "import scheduler.scheduler", {LAYERS}),
    # A cycle inside a package, even through an import inside a function.
    ("worker/executors/bash.py", "def _late() -> None:\n    from worker.executors import dispatch",
     {ACYCLIC}),
    ("common/keys.py", "import common.store", {ACYCLIC}),
])
def test_a_planted_violation_breaks_its_contract(
    tree: Path, module: str, line: str, broken: set[str]
) -> None:
    plant(tree, module, line)
    code, out = lint(tree)
    assert code != 0, out
    for name in (LAYERS, KERNEL, ACYCLIC):
        assert f"{name} {'BROKEN' if name in broken else 'KEPT'}" in out, out


def test_the_sandbox_exposes_every_package_that_import_gristmill_needs() -> None:
    """Job code may `import gristmill`: a package it imports that the sandbox hides fails the job."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    needed = {module.split(".")[0] for module in graph.find_upstream_modules("gristmill")}
    assert needed <= set(SANDBOX_PACKAGES), needed - set(SANDBOX_PACKAGES)

"""The architecture contracts (pyproject.toml's [tool.importlinter], run by `make contracts`) hold
on the tree, and each one bites: a wrong import written into a scratch copy of slicehub/ breaks
it, and lint-imports names the import and the contract's sentence.

lint-imports runs as `make test` runs it: the venv's executable, from the root of the tree it
checks, which it puts first on sys.path (so grimp reads that tree's `slicehub`, and
`tests.contracts`, the private-names contract type, imports from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = {
    contract["id"]: contract["name"]
    for contract in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "500", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def broken_section(output: str, contract_id: str) -> str:
    """What lint-imports says under the contract's heading in 'Broken contracts' ('' if kept)."""
    _, _, broken = output.partition("Broken contracts")
    start = broken.find(f"\n{CONTRACTS[contract_id]}\n")
    if start < 0:
        return ""
    ends = [broken.find(f"\n{name}\n", start + 1) for name in CONTRACTS.values()]
    return broken[start : min([end for end in ends if end > start], default=len(broken))]


def test_the_tree_keeps_every_contract():
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A copy of slicehub/, the config and the contract type, and lint-imports' output on it as
    copied (the tree may break contracts already; a case must add its own import to them)."""
    root = tmp_path_factory.mktemp("architecture")
    shutil.copytree(
        REPO / "slicehub", root / "slicehub", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "tests").mkdir()
    for name in ("__init__.py", "contracts.py"):
        shutil.copy(REPO / "tests" / name, root / "tests")
    as_copied = lint_imports(root)
    assert "Analyzed" in as_copied.stdout, as_copied.stdout + as_copied.stderr
    return root, as_copied.stdout


@pytest.fixture
def edit(scratch):
    """Appends lines to a module of the scratch copy, and puts the module back afterwards."""
    root, _ = scratch
    originals = {}

    def append(module: str, lines: str) -> None:
        path = root / module
        originals.setdefault(path, path.read_text())
        path.write_text(originals[path] + "\n" + lines + "\n")

    yield append
    for path, text in originals.items():
        path.write_text(text)


# (contract, module edited, lines appended, what lint-imports must print under the contract)
WRONG_IMPORTS = {
    "notebook side imports hub code": (
        "notebook-side-imports-only-common",
        "slicehub/extensions/kernel.py",
        "import slicehub.quota.ledger",
        "slicehub.extensions.kernel -> slicehub.quota.ledger",
    ),
    "common imports the spawners": (
        "common-is-the-leaf",
        "slicehub/common/clock.py",
        "from slicehub.spawners import options",
        "slicehub.common.clock -> slicehub.spawners.options",
    ),
    "quota imports the spawners": (
        "quota-imports-no-spawners",
        "slicehub/quota/pricing.py",
        "import slicehub.spawners.options",
        "slicehub.quota.pricing -> slicehub.spawners.options",
    ),
    "spawners import the ledger": (
        "spawners-use-the-quota-client",
        "slicehub/spawners/options.py",
        "def ledger():\n    from slicehub.quota.ledger import Ledger\n\n    return Ledger",
        "slicehub.spawners.options -> slicehub.quota.ledger",
    ),
    "slurm imports local": (
        "slice-sources-are-independent",
        "slicehub/spawners/slurm/commands.py",
        "from ..local import limits",
        "slicehub.spawners.slurm.commands -> slicehub.spawners.local.limits",
    ),
    "settings imports the cli": (
        "composition-roots-on-top",
        "slicehub/settings.py",
        "import slicehub.cli",
        "slicehub.settings -> slicehub.cli",
    ),
    "a private name, from-imported over several lines": (
        "no-private-names",
        "slicehub/extensions/server.py",
        "from slicehub.common.money import (\n    format_money,\n    _cents_text,\n)",
        "slicehub.extensions.server is not allowed to use slicehub.common.money._cents_text",
    ),
    "a private name, as a module's attribute": (
        "no-private-names",
        "slicehub/extensions/server.py",
        "def now():\n    return clock._utcnow()",
        "slicehub.extensions.server is not allowed to use slicehub.common.clock._utcnow",
    ),
}


@pytest.mark.parametrize(
    ("contract", "module", "lines", "named"), WRONG_IMPORTS.values(), ids=WRONG_IMPORTS
)
def test_a_wrong_import_breaks_its_contract(scratch, edit, contract, module, lines, named):
    _, as_copied = scratch
    assert named not in broken_section(as_copied, contract)
    edit(module, lines)
    run = lint_imports(scratch[0])
    assert run.returncode != 0, run.stdout + run.stderr
    assert f"{CONTRACTS[contract]} BROKEN" in run.stdout, run.stdout
    assert named in broken_section(run.stdout, contract), run.stdout


def test_dunder_names_and_a_modules_own_privates_are_allowed(scratch, edit):
    edit(
        "slicehub/extensions/server.py",
        "from slicehub import __version__\n\n\ndef _own():\n    return _own.__name__",
    )
    run = lint_imports(scratch[0])
    assert "slicehub.extensions.server" not in broken_section(run.stdout, "no-private-names")

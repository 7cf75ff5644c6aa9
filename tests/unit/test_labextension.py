"""The prebuilt JupyterLab extension @slicehub/status, as committed in
slicehub/extensions/labextension.

`make labextension` builds it from labextension/ (TypeScript; its pure module has its own tests
under node's test runner, run by that target). These tests need no node: they check that the
committed build is complete, matches its source's package.json, carries the endpoints the
server extension serves, and that the environment running the tests has it installed, enabled
and up to date (a wheel installs it through pyproject's data-files).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_core.paths import jupyter_path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension"
BUILT = ROOT / "slicehub" / "extensions" / "labextension"
NAME = "@slicehub/status"


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def source_package() -> dict:
    return _json(SOURCE / "package.json")


@pytest.fixture(scope="module")
def built_package() -> dict:
    return _json(BUILT / "package.json")


def test_built_package_names_the_extension(built_package, source_package):
    assert built_package["name"] == NAME
    assert built_package["name"] == source_package["name"]
    assert built_package["version"] == source_package["version"]
    assert source_package["jupyterlab"]["outputDir"] == "../slicehub/extensions/labextension"


def test_built_package_is_the_source_package_plus_build_metadata(built_package, source_package):
    # The builder copies package.json and adds jupyterlab._build: anything else differing means
    # labextension/package.json changed after the last `make labextension`.
    built = json.loads(json.dumps(built_package))
    build = built["jupyterlab"].pop("_build")
    assert built == source_package
    assert build == {
        "load": build["load"],
        "extension": "./extension",
        "style": "./style",
    }
    assert re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", build["load"])


def test_static_files_are_complete_and_small(built_package):
    static = BUILT / "static"
    names = {p.name for p in static.iterdir()}
    load = Path(built_package["jupyterlab"]["_build"]["load"]).name
    assert load in names
    # one remoteEntry only: a stale one from an earlier build must not be committed
    assert [n for n in names if n.startswith("remoteEntry.")] == [load]
    assert "style.js" in names
    assert "third-party-licenses.json" in names
    assert not [n for n in names if n.endswith(".map")], "no source maps in the committed build"
    total = sum(p.stat().st_size for p in BUILT.rglob("*") if p.is_file())
    assert total < 100_000, f"the built extension is {total} bytes"


def test_bundle_talks_to_the_server_extension():
    bundle = "".join(p.read_text(encoding="utf-8") for p in (BUILT / "static").glob("*.js"))
    for needle in ("slicehub/api/status", "slicehub/api/extend", f"{NAME}:plugin", "HK$"):
        assert needle in bundle, needle


def test_install_json_names_the_python_package():
    built = _json(BUILT / "install.json")
    assert built == _json(SOURCE / "install.json")
    assert built["packageManager"] == "python"
    assert built["packageName"] == "slicehub"


def _installed_dirs() -> list[Path]:
    return [
        Path(base, NAME)
        for base in jupyter_path("labextensions")
        if Path(base, NAME, "package.json").is_file()
    ]


def test_installed_copy_is_the_committed_build(built_package):
    dirs = _installed_dirs()
    assert dirs, f"{NAME} is not installed in {sys.prefix}: run `make venv`"
    installed = _json(dirs[0] / "package.json")
    assert installed["version"] == built_package["version"]
    assert installed["jupyterlab"]["_build"] == built_package["jupyterlab"]["_build"], (
        f"{dirs[0]} holds an older build: run `make venv`"
    )
    assert (dirs[0] / installed["jupyterlab"]["_build"]["load"]).is_file()


def test_jupyter_labextension_list_shows_it_enabled_and_ok(built_package):
    jupyter = Path(sys.executable).with_name("jupyter")
    result = subprocess.run(
        [str(jupyter), "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listing = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    version = built_package["version"]
    assert re.search(rf"^\s*{re.escape(NAME)} v{re.escape(version)} enabled OK\b", listing, re.M), (
        listing
    )

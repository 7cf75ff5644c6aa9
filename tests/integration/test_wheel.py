"""The installed wheel, not the checkout: what `pip install slicehub` gives a centre.

The wheel is built from the working tree as it is (a copy, so that setuptools' build/ never lands
in the repository), installed with its dependencies into a fresh venv made from the system Python
outside the repository, and then used only from there: one top-level package in site-packages,
the console script, the `jupyterhub.spawners` entry points, the server extension's config, the
GPU kernelspec, the deployment files under share/slicehub, and a hub started from the installed
`jupyterhub_config.py` that spawns a slice whose server extension answers. Every command runs in
a temporary directory with nothing of the repository on its path, and the hub test shows by the
bytecode written at import that the hub, the quota service and the single-user server imported
slicehub from the fresh venv.

Cost, on this machine: about 40 s for the file. Building the wheel takes 3 s, the venv 3 s, pip
install 18 s (the dependencies from the package index, through pip's cache), the hub and a
server 8 s, the other commands a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from hubprocess import HubProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE_PYTHON = "/usr/bin/python3"
KERNELSPEC = REPO / "images" / "kernelspec" / "slicehub-gpu"
OPTIONS = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 0.5}
# what a build never needs and the repository's .gitignore keeps out of it
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".data",
    ".bench-data",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "test-artifacts",
    ".screenshots",
)
# where the wheel may put files outside site-packages, relative to the venv
DATA_PREFIXES = ("bin/slicehub", "etc/jupyter/", "share/jupyter/", "share/slicehub/")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Venv:
    """The fresh venv the wheel is installed in, and how to run its commands cleanly."""

    root: Path
    workdir: Path  # cwd of every command: outside the repository
    site_packages: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def hub_config(self) -> Path:
        return self.root / "share" / "slicehub" / "hub_config"

    def env(self) -> dict[str, str]:
        """This environment minus anything that points into the repository or another venv;
        Jupyter's paths in the venv win over the user's (~/.local/share/jupyter)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("JUPYTER")
        }
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _in_repo(Path(p))]
        env["PATH"] = os.pathsep.join([str(self.bin), *path])
        env["VIRTUAL_ENV"] = str(self.root)
        env["PYTHONNOUSERSITE"] = "1"
        env["JUPYTER_PREFER_ENV_PATH"] = "1"
        return env

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command of this venv's bin/; fail with its output."""
        cmd = [str(self.bin / argv[0]), *map(str, argv[1:])]
        done = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done


def _in_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel of the working tree, installed with its dependencies into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert not _in_repo(tmp), f"the temporary directory {tmp} is inside the repository"
    source, wheels, workdir = tmp / "source", tmp / "wheels", tmp / "work"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    workdir.mkdir()
    built = subprocess.run(  # with the project's pip: its build isolation, no network
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, source],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, f"building the wheel failed\n{built.stdout}\n{built.stderr}"
    [wheel] = wheels.glob("slicehub-*.whl")

    root = tmp / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", root], check=True, cwd=workdir)
    purelib = subprocess.run(
        [root / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    installed = Venv(root, workdir, Path(purelib))
    # about 18 s here: the dependencies come from the package index, through pip's cache
    installed.run("python", "-m", "pip", "install", "-q", wheel, timeout=600)
    return installed


def test_one_top_level_package(venv):
    shown = venv.run("python", "-m", "pip", "show", "-f", "slicehub").stdout
    location = Path(re.search(r"^Location: (.+)$", shown, re.MULTILINE)[1])
    files = [line.strip() for line in shown.split("\nFiles:\n", 1)[1].splitlines()]
    assert location == venv.site_packages

    inside = {f.split("/", 1)[0] for f in files if not f.startswith("../")}
    dist_info = {name for name in inside if re.fullmatch(r"slicehub-[^/]+\.dist-info", name)}
    assert len(dist_info) == 1, inside
    assert inside - dist_info == {"slicehub"}, "pip show -f slicehub: more than one package"
    for generic in ("spawners", "quota", "extensions"):
        assert not (location / generic).exists(), f"site-packages/{generic}"
        assert not (location / f"{generic}.py").exists(), f"site-packages/{generic}.py"
    [info] = dist_info
    top_level = location / info / "top_level.txt"
    if top_level.exists():
        assert top_level.read_text().split() == ["slicehub"]

    # outside site-packages: only the console script and the data files (pyproject.toml)
    outside = [
        (location / f).resolve().relative_to(venv.root.resolve()).as_posix()
        for f in files
        if f.startswith("../")
    ]
    strays = [f for f in outside if not f.startswith(DATA_PREFIXES)]
    assert not strays, f"installed outside the package and its data files: {strays}"
    for wanted in (
        "bin/slicehub",
        "etc/jupyter/jupyter_server_config.d/slicehub.json",
        "share/jupyter/kernels/slicehub-gpu/kernel.json",
        "share/slicehub/hub_config/jupyterhub_config.py",
        "share/slicehub/hub_config/demo-site.toml",
    ):
        assert wanted in outside, f"the wheel does not install {wanted}"


def test_the_installed_code_and_its_deployment_files(venv):
    probe = venv.run(
        "python",
        "-c",
        "import json, slicehub, slicehub.settings as s; "
        "print(json.dumps([slicehub.__file__, str(s.deployment_dir())]))",
    )
    package, deployment = json.loads(probe.stdout)
    assert Path(package).is_relative_to(venv.site_packages), package
    assert Path(deployment) == venv.hub_config


def test_the_console_script(venv):
    usage = venv.run("slicehub", "--help").stdout
    for command in ("demo", "check-site", "slices"):
        assert command in usage
    site = venv.hub_config / "demo-site.toml"
    checked = venv.run("slicehub", "check-site", site).stdout
    assert f"{site}: OK." in checked


def test_the_spawner_entry_points_resolve_to_spawners(venv):
    probe = venv.run(
        "python",
        "-c",
        "import json\n"
        "from importlib.metadata import entry_points\n"
        "from jupyterhub.spawner import Spawner\n"
        "found = {}\n"
        "for ep in entry_points(group='jupyterhub.spawners'):\n"
        "    if ep.name.startswith('slicehub'):\n"
        "        cls = ep.load()\n"
        "        module = __import__(cls.__module__, fromlist=['_'])\n"
        "        found[ep.name] = [f'{cls.__module__}.{cls.__qualname__}',\n"
        "                          issubclass(cls, Spawner), module.__file__]\n"
        "print(json.dumps(found))\n",
    )
    found = json.loads(probe.stdout)
    assert {name: (path, ok) for name, (path, ok, _) in found.items()} == {
        "slicehub-local": ("slicehub.spawners.local.spawner.LocalSliceSpawner", True),
        "slicehub-slurm": ("slicehub.spawners.slurm.spawner.SlurmSliceSpawner", True),
    }
    for _, _, module_file in found.values():
        assert Path(module_file).is_relative_to(venv.site_packages), module_file


def test_the_server_extension_and_the_kernelspec(venv):
    listed = venv.run("jupyter", "server", "extension", "list")
    text = ANSI.sub("", listed.stdout + listed.stderr)
    # one block per config dir; the extension is enabled by the wheel's file in the venv's
    blocks = {block.split("\n", 1)[0].strip(): block for block in text.split("Config dir: ")[1:]}
    ours = blocks.get(str(venv.root / "etc" / "jupyter"), "")
    assert re.search(r"slicehub\.extensions\.server\s+enabled", ours), text
    assert re.search(r"slicehub\.extensions\.server\s+OK", ours), text

    specs = json.loads(venv.run("jupyter", "kernelspec", "list", "--json").stdout)["kernelspecs"]
    assert "slicehub-gpu" in specs, f"jupyter kernelspec list: {sorted(specs)}"
    gpu = specs["slicehub-gpu"]
    assert Path(gpu["resource_dir"]) == venv.root / "share" / "jupyter" / "kernels" / "slicehub-gpu"
    installed = json.loads((Path(gpu["resource_dir"]) / "kernel.json").read_text())
    assert installed == json.loads((KERNELSPEC / "kernel.json").read_text())


def _pyc(package_dir: Path, module: str) -> list[Path]:
    return sorted((package_dir / "__pycache__").glob(f"{module}.*.pyc"))


def test_the_hub_runs_from_the_wheel(venv, tmp_path):
    package = venv.site_packages / "slicehub"
    # pip compiled everything at install: start without slicehub's bytecode, so that what the
    # processes below write at import shows where they imported slicehub from
    for cache in package.rglob("__pycache__"):
        shutil.rmtree(cache)
    config = venv.hub_config / "jupyterhub_config.py"
    env = venv.env()
    hub = HubProcess(
        config,
        tmp_path / "hub",  # cwd and SLICEHUB_DATA_DIR (hub/data) of the hub
        env={
            "PATH": env["PATH"],
            "VIRTUAL_ENV": env["VIRTUAL_ENV"],
            "PYTHONPATH": "",  # empty: Python ignores it (a hub service keeps PYTHONPATH)
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "",  # empty: imports write bytecode, the proof below
            # the embedded demo's deployment as installed with the wheel
            "SLICEHUB_DEPLOYMENT": str(venv.hub_config / "demo.toml"),
        },
        venv_bin=venv.bin,
    )
    try:
        hub.start(timeout=90)
        hub.create_user("alice")
        r = hub.start_server("alice", OPTIONS)
        assert r.status_code in (201, 202), r.text
        hub.wait_for_server("alice", timeout=90)

        r = hub.get("/user/alice/slicehub/api/status")
        assert r.status_code == 200, r.text
        status = r.json()
        assert status["slice"]["type"] == OPTIONS["slice_type"], status
        assert status["quota"] == "ok", status  # the server's own token reached the ledger

        # the quota service runs on the venv's Python, the server in the data dir
        processes = psutil.Process(hub.proc.pid).children(recursive=True)
        [quota] = [p.cmdline() for p in processes if "slicehub.quota.service" in p.cmdline()]
        [server] = [p for p in processes if str(venv.bin / "jupyterhub-singleuser") in p.cmdline()]
        assert Path(quota[0]).parent == venv.bin, quota
        assert not _in_repo(Path(server.cwd())), server.cwd()

        hub.stop_server("alice")
    finally:
        hub.close()

    # imported from the venv: by the hub (its config), the quota service, the server extension
    assert _pyc(package, "hub"), "the hub did not import slicehub.hub from the venv"
    assert _pyc(package / "quota", "api"), "the quota service did not import from the venv"
    assert _pyc(package / "extensions", "server"), "the server did not import from the venv"

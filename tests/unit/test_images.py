"""Static checks of the container recipes in images/, so they cannot rot unnoticed where no Docker
engine or Apptainer runs (CI): the requirements files are pinned and pinned to what the tests run
on, the hub's file covers pyproject.toml, every path a recipe copies exists, the two recipes of an
image agree, the kernelspec is valid and the Apptainer batch script renders.

No network, no container engine: only files and the running venv's package metadata.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
SINGLEUSER_REQS = IMAGES / "singleuser" / "requirements.txt"
HUB_REQS = IMAGES / "hub" / "requirements.txt"
KERNELSPEC = IMAGES / "kernelspec" / "slicehub-gpu"
APPTAINER_BATCH_SCRIPT = IMAGES / "singleuser" / "slurm_job_apptainer.sh.j2"

# the marker `make venv` greps out (grep -v '# gpu-only'): such lines install only where a GPU is
GPU_ONLY = "# gpu-only"
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:\[(?P<extras>[A-Za-z0-9._,\s-]*)\])?"
    r"\s*==\s*(?P<version>[A-Za-z0-9.+!_-]+)$"
)


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (Jinja2 = jinja2, a_b = a-b)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalised, without extras: dask[array,...] -> dask
    extras: frozenset[str]
    version: str
    gpu_only: bool
    where: str  # file:line, for messages


def requirement_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, the requirement without its comment, the whole line) of each non-empty line."""
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        spec = raw.split("#", 1)[0].strip()
        if spec:
            lines.append((number, spec, raw))
    return lines


def parse_pin(spec: str) -> tuple[str, frozenset[str], str] | None:
    """`name[extras]==version` -> (normalised name, extras, version); anything else -> None."""
    m = _PIN.match(spec)
    if m is None:
        return None
    extras = frozenset(e.strip() for e in (m["extras"] or "").split(",") if e.strip())
    return normalise(m["name"]), extras, m["version"]


def pins(path: Path) -> list[Pin]:
    found = []
    for number, spec, raw in requirement_lines(path):
        parsed = parse_pin(spec)
        where = f"{path.relative_to(REPO)}:{number}"
        if parsed is None:
            pytest.fail(f"{where}: {spec!r} is not pinned as name==version")
        name, extras, version = parsed
        found.append(Pin(name, extras, version, GPU_ONLY in raw, where))
    return found


def pins_by_name(path: Path) -> dict[str, Pin]:
    return {pin.name: pin for pin in pins(path)}


def not_installed_as_pinned(wanted: list[Pin]) -> list[str]:
    problems = []
    for pin in wanted:
        try:
            installed = metadata.version(pin.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{pin.where}: {pin.name}=={pin.version}, not installed")
            continue
        if Version(installed) != Version(pin.version):
            problems.append(f"{pin.where}: {pin.name}=={pin.version}, installed {installed}")
    return problems


# -- the requirements files ------------------------------------------------------------------


@pytest.mark.parametrize("path", [SINGLEUSER_REQS, HUB_REQS], ids=["singleuser", "hub"])
def test_every_requirement_is_pinned_once(path):
    lines = requirement_lines(path)
    assert lines, f"{path} lists no requirement"
    unpinned = [
        f"{path.relative_to(REPO)}:{number}: {spec}"
        for number, spec, _ in lines
        if parse_pin(spec) is None
    ]
    assert not unpinned, "not pinned as name==version:\n" + "\n".join(unpinned)
    names = [pin.name for pin in pins(path)]
    assert len(names) == len(set(names)), f"a package is pinned twice in {path}: {names}"


def test_singleuser_pins_are_what_the_venv_runs():
    """`make venv` installs every line but the gpu-only ones; the tests' servers run on them."""
    wanted = [pin for pin in pins(SINGLEUSER_REQS) if not pin.gpu_only]
    problems = not_installed_as_pinned(wanted)
    assert not problems, "the venv differs from the single-user pins (make venv):\n" + "\n".join(
        problems
    )


def test_the_kernels_gpu_stack_is_installed_in_ci_too():
    """The kernel imports CuPy, Dask-CUDA and RMM on its GPU path: they install without a GPU,
    so CI installs them (only large extras such as cuDF may be gpu-only)."""
    by_name = pins_by_name(SINGLEUSER_REQS)
    for name in ("cupy-cuda13x", "dask-cuda", "rmm-cu13", "cuda-bindings"):
        assert name in by_name, f"{name} is not pinned in {SINGLEUSER_REQS}"
        assert not by_name[name].gpu_only, f"{by_name[name].where}: {name} must not be gpu-only"


def test_hub_pins_are_what_the_venv_runs():
    problems = not_installed_as_pinned(pins(HUB_REQS))
    assert not problems, "the venv differs from the hub pins (make venv):\n" + "\n".join(problems)


def test_hub_requirements_are_pyprojects_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    hub = pins_by_name(HUB_REQS)
    problems = []
    for dependency in project["dependencies"]:
        req = Requirement(dependency)
        pin = hub.get(normalise(req.name))
        if pin is None:
            problems.append(f"{dependency}: not in {HUB_REQS.relative_to(REPO)}")
            continue
        if not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{dependency}: pinned {pin.version}, outside pyproject's range")
        if not req.extras <= pin.extras:
            problems.append(f"{dependency}: pinned without the extras {sorted(req.extras)}")
    declared = {normalise(Requirement(d).name) for d in project["dependencies"]}
    problems += [
        f"{pin.where}: {name} is not a dependency in pyproject.toml"
        for name, pin in hub.items()
        if name not in declared
    ]
    assert not problems, "\n".join(problems)


def test_hub_and_server_sides_agree():
    """jupyterhub-singleuser (in the single-user image) talks to the hub's API (in the hub
    image): one version on both sides."""
    server, hub = pins_by_name(SINGLEUSER_REQS)["jupyterhub"], pins_by_name(HUB_REQS)["jupyterhub"]
    assert server.version == hub.version, f"{server.where} vs {hub.where}"


def test_the_proxy_is_pinned_by_the_lock_file():
    wanted = json.loads((REPO / "package.json").read_text())["dependencies"]
    locked = json.loads((REPO / "package-lock.json").read_text())["packages"]
    version = wanted["configurable-http-proxy"]
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version), "package.json: pin an exact version"
    assert locked["node_modules/configurable-http-proxy"]["version"] == version


# -- the recipes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    path: Path
    base: str  # the image it starts from, ARGs resolved
    copies: tuple[tuple[str, str], ...]  # (source in the repo, destination in the image)
    run: str  # every RUN (Dockerfile) or %post (Apptainer), joined
    command: str  # CMD + ENTRYPOINT, or %runscript


def _instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        continued = stripped.endswith("\\")
        current += " " + (stripped[:-1] if continued else stripped)
        if not continued:
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def _destination(source: str, dest: str, workdir: str = "/") -> str:
    """Where `source` lands: into `dest` when it ends with a slash, relative to the WORKDIR."""
    target = dest + Path(source).name if dest.endswith("/") else dest
    return posixpath.normpath(posixpath.join(workdir, target))


def read_dockerfile(path: Path) -> Recipe:
    args: dict[str, str] = {}
    base, workdir, copies, run, command = "", "/", [], [], []
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip()
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest.split()[0])
        elif keyword in ("COPY", "ADD"):
            words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            if any(w.startswith("--from") for w in words):
                continue  # from another stage, not from the repository
            words = [w for w in words if not w.startswith("--")]
            copies += [(source, _destination(source, words[-1], workdir)) for source in words[:-1]]
        elif keyword == "RUN":
            run.append(rest)
        elif keyword in ("CMD", "ENTRYPOINT"):
            command.append(" ".join(json.loads(rest)) if rest.startswith("[") else rest)
    return Recipe(path, base, tuple(copies), "\n".join(run), "\n".join(command))


def read_definition(path: Path) -> Recipe:
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("%"):
            section = stripped[1:].split()[0]
            sections.setdefault(section, [])
        elif section is None:
            if stripped and not stripped.startswith("#"):
                key, _, value = stripped.partition(":")
                header[key.strip()] = value.strip()
        elif not stripped.startswith("#"):
            sections[section].append(stripped)
    assert header.get("Bootstrap") == "docker", f"{path}: Bootstrap: docker expected"
    copies = []
    for line in sections.get("files", []):
        if line:
            source, *dest = line.split()
            copies.append((source, _destination(source, dest[0]) if dest else source))
    return Recipe(
        path,
        header["From"],
        tuple(copies),
        "\n".join(sections.get("post", [])).replace("\\\n", " "),
        "\n".join(sections.get("runscript", [])),
    )


# image -> its Dockerfile and its Apptainer definition (paths under images/)
RECIPES = {
    "singleuser": ("singleuser/Dockerfile", "singleuser/slicehub-singleuser.def"),
    "hub": ("hub/Dockerfile", "hub/slicehub-hub.def"),
}
ALL_RECIPES = [path for pair in RECIPES.values() for path in pair]


@functools.cache
def recipe_at(path: str) -> Recipe:
    read = read_definition if path.endswith(".def") else read_dockerfile
    return read(IMAGES / path)


@pytest.mark.parametrize("path", ALL_RECIPES)
def test_every_copied_path_exists_and_is_named(path):
    recipe = recipe_at(path)
    assert recipe.copies, f"{recipe.path}: copies nothing"
    missing = [s for s, _ in recipe.copies if not (REPO / s).exists()]
    assert not missing, (
        f"{recipe.path.relative_to(REPO)} copies what the repository lacks: {missing}"
    )
    # the whole context would bring .venv, .data (secrets, databases) and node_modules along
    broad = [s for s, _ in recipe.copies if Path(s) in (Path("."), Path("/")) or "*" in s]
    assert not broad, f"{recipe.path}: copy named paths, not {broad}"


def _destination_of(recipe: Recipe, source: str) -> str:
    for copied, dest in recipe.copies:
        if Path(copied) == Path(source):
            return dest
    pytest.fail(f"{recipe.path.relative_to(REPO)} does not copy {source}")


@pytest.mark.parametrize("path", ALL_RECIPES)
def test_each_recipe_installs_its_requirements_then_the_package_without_deps(path):
    recipe = recipe_at(path)
    reqs = SINGLEUSER_REQS if path in RECIPES["singleuser"] else HUB_REQS
    installed_from = _destination_of(recipe, str(reqs.relative_to(REPO)))
    assert re.search(rf"pip install -r {re.escape(installed_from)}(\s|$)", recipe.run)
    for needed in ("pyproject.toml", "README.md", "slicehub"):
        _destination_of(recipe, needed)
    assert "pip install --no-deps" in recipe.run


@pytest.mark.parametrize("path", RECIPES["singleuser"])
def test_the_single_user_recipes_install_the_kernelspec_and_run_the_server(path):
    recipe = recipe_at(path)
    kernelspec = _destination_of(recipe, str(KERNELSPEC.relative_to(REPO)))
    assert re.search(
        rf"jupyter kernelspec install --sys-prefix\s+{re.escape(kernelspec)}", recipe.run
    )
    assert "jupyterhub-singleuser" in recipe.command
    assert "python3.12 -m venv /opt/slicehub" in recipe.run


@pytest.mark.parametrize("path", RECIPES["hub"])
def test_the_hub_recipes_run_the_repositorys_config_with_the_locked_proxy(path):
    recipe = recipe_at(path)
    config = _destination_of(recipe, "hub_config") + "/jupyterhub_config.py"
    assert (REPO / "hub_config" / "jupyterhub_config.py").is_file()
    assert f"jupyterhub -f {config}" in recipe.command
    # configurable-http-proxy is installed from the lock file beside hub_config/
    deploy_root = str(Path(config).parent.parent)
    for lock in ("package.json", "package-lock.json"):
        assert str(Path(_destination_of(recipe, lock)).parent) == deploy_root
    assert "npm ci" in recipe.run
    assert "python3.12 -m venv /opt/slicehub" in recipe.run


@pytest.mark.parametrize("image", RECIPES)
def test_the_dockerfile_and_the_definition_start_from_the_same_base(image):
    dockerfile, definition = (recipe_at(path) for path in RECIPES[image])
    assert dockerfile.base == definition.base, f"{image}: {dockerfile.base} vs {definition.base}"


def test_the_single_user_base_is_cuda_13_runtime():
    # the pins are CUDA 13 wheels (cupy-cuda13x, rmm-cu13): the base's CUDA must be 13 too
    assert re.fullmatch(
        r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04", recipe_at(RECIPES["singleuser"][1]).base
    )


# -- the kernelspec and the Slurm batch script -----------------------------------------------


def test_the_kernelspec_starts_the_slice_kernel():
    spec = json.loads((KERNELSPEC / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (GPU: CuPy + Dask-CUDA)"
    assert spec["language"] == "python"
    assert "--ext=slicehub.extensions.kernel" in spec["argv"]
    assert "{connection_file}" in spec["argv"]
    assert find_spec("slicehub.extensions.kernel") is not None


@pytest.mark.parametrize("cpu_only", [False, True], ids=["gpu", "cpu"])
def test_the_apptainer_batch_script_renders_and_parses(cpu_only):
    from slicehub.spawners.slurm import job as slurm_job

    command = [
        "/opt/slicehub/bin/jupyterhub-singleuser",
        "--ip=0.0.0.0",
        "it's; quoted",
    ]
    script = slurm_job.render_script(
        slurm_job.script_template(str(APPTAINER_BATCH_SCRIPT)),
        slice_type="h100.1g.10gb",
        ledger_session=7,
        cpu_only=cpu_only,
        command=command,
    )
    execs = [line for line in script.splitlines() if line.startswith("exec ")]
    nv = "" if cpu_only else " --nv"
    assert execs == [f'exec apptainer exec{nv} "$image" {shlex.join(command)}']
    assert ("export CUDA_VISIBLE_DEVICES=\n" in script) is cpu_only
    assert 'image="${SLICEHUB_SINGLEUSER_IMAGE:?' in script
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr

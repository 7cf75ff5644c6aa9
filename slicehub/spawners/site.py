"""The site file: what a deployment offers, read from TOML and checked before the hub starts.

A site file names the nodes and GPUs (declared, or discovered through NVML), the slice types
offered with their CPUs, memory and list price, and the limits on a session's duration. A site
whose servers run as Slurm jobs has a `[slurm]` table instead of nodes: the partition and GRES
type behind each slice type and the Slurm account of each project (Slurm knows the nodes). Every
problem is reported as a `SiteError` that names the file, the key and the fix, so a bad edit
stops the hub at start-up instead of surfacing as a failed spawn hours later.

This module decides what is *offered*; `slicehub.spawners.local.allocator` decides what is *free*.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyterhub.traitlets import ByteSpecification
from traitlets import TraitError

from slicehub.common.catalogue import SliceShape, gpu_model, parse_slice_type, solve_layout
from slicehub.common.money import parse_cents

from .local import inventory as inv
from .slurm import commands as sc


class SiteError(ValueError):
    """A problem in a site file: which file, which key, what is wrong and how to fix it."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str):
        self.path, self.key, self.problem, self.fix = str(path), key, problem, fix
        super().__init__(f"{path}: {key}: {problem}. Fix: {fix}")


_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as slicehub.spawners.options accepts them
RUN_AS = ("hub-user", "unix-users")
INVENTORY_SOURCES = ("declared", "nvml", "auto")
SLURM_DEVICES = ("real", "declared")
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")


@dataclass(frozen=True)
class SliceType:
    """A slice type as this site offers it."""

    name: str
    shape: SliceShape
    cpus: int
    memory_bytes: int
    price_cents: int  # list price per hour
    description: str

    @property
    def gpu_memory_bytes(self) -> int:
        return self.shape.gpu_memory_bytes


@dataclass(frozen=True)
class SessionLimits:
    min_minutes: int = 15
    max_minutes: int = 12 * 60
    default_minutes: int = 120


@dataclass(frozen=True)
class SlurmSliceType:
    """Where a slice type runs on the cluster: its partition and the GRES that make it."""

    partition: str
    gres_type: str | None  # GRES type of `gpu`, e.g. "1g.10gb"; None for a CPU-only slice
    gres_count: int  # 1 for a MIG slice, N for N whole GPUs, 0 for a CPU-only slice

    @property
    def gres(self) -> tuple[tuple[str, int], ...]:
        return ((self.gres_type, self.gres_count),) if self.gres_type else ()


@dataclass(frozen=True)
class SlurmSite:
    """The `[slurm]` table: how this site's slice types and projects map onto the cluster."""

    partition: str  # the default partition
    devices: str  # "real", or "declared": GRES on stand-in devices (a test cluster)
    slice_types: Mapping[str, SlurmSliceType]
    accounts: Mapping[str, str]  # Slicehub project -> Slurm account
    default_account: str | None  # for projects not in `accounts`; None: such projects are refused
    commands: Mapping[str, str]  # "sbatch" -> "/usr/bin/sbatch"; missing: found on PATH

    def account_for(self, project: str) -> str | None:
        return self.accounts.get(project, self.default_account)

    def command(self, name: str) -> str:
        return self.commands.get(name, name)


@dataclass(frozen=True)
class Site:
    path: Path
    name: str
    currency: str
    run_as: str
    inventory_source: str
    sessions: SessionLimits
    nodes: tuple[inv.Node, ...]
    slice_types: Mapping[str, SliceType] = field(default_factory=dict)
    slurm: SlurmSite | None = None  # servers run as Slurm jobs; Slurm places them

    def inventory(self) -> inv.Inventory:
        return inv.Inventory(self.nodes)


def _bytes(path, key, value) -> int:
    try:
        out = ByteSpecification().validate(None, value)
    except TraitError:
        raise SiteError(
            path, key, f"{value!r} is not an amount of memory", 'write e.g. "64G" or "512M"'
        ) from None
    if not isinstance(out, int) or out <= 0:
        raise SiteError(path, key, f"{value!r} must be more than zero", 'write e.g. "64G"')
    return out


def _int(path, key, value, minimum: int = 0, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SiteError(
            path, key, f"{value!r} is not a whole number", f"write a number ≥ {minimum}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
        raise SiteError(path, key, f"{value} is out of range", f"write a number {bound}")
    return value


def _table(path, key, value) -> dict:
    if not isinstance(value, dict):
        raise SiteError(path, key, "must be a table", f"write it as [{key}]")
    return value


def _no_unknown(path, key, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{key}." if key else ""
        raise SiteError(
            path,
            f"{prefix}{unknown[0]}",
            "is not a setting Slicehub knows",
            f"remove it or use one of: {', '.join(sorted(allowed))}",
        )


def _choice(path, key, value, choices) -> str:
    if value not in choices:
        raise SiteError(path, key, f"{value!r} is not allowed", f"use one of: {', '.join(choices)}")
    return value


def load_site(path: Path | str) -> Site:
    """Read and check a site file. Raises SiteError naming the key and the fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SiteError(
            path, "(file)", "does not exist", "point SLICEHUB_SITE at a site file"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SiteError(
            path, "(syntax)", f"is not valid TOML ({e})", "correct the syntax"
        ) from None
    return parse_site(raw, path)


def parse_site(raw: dict[str, Any], path: Path | str = "<site>") -> Site:
    path = Path(path)
    _no_unknown(path, "", raw, {"site", "sessions", "nodes", "slice_types", "slurm"})
    head = _table(path, "site", raw.get("site", {}))
    _no_unknown(path, "site", head, {"name", "currency", "run_as", "inventory"})
    name = head.get("name", "slicehub")
    if not isinstance(name, str) or not name:
        raise SiteError(path, "site.name", "must be a non-empty string", 'write name = "my-centre"')
    currency = _choice(path, "site.currency", head.get("currency", "HKD"), ("HKD",))
    run_as = _choice(path, "site.run_as", head.get("run_as", "unix-users"), RUN_AS)
    source = _choice(path, "site.inventory", head.get("inventory", "declared"), INVENTORY_SOURCES)

    sessions = _sessions(path, _table(path, "sessions", raw.get("sessions", {})))
    nodes = _nodes(path, raw.get("nodes", []), name)
    slice_types = _slice_types(path, _table(path, "slice_types", raw.get("slice_types", {})))
    if "slurm" in raw:
        if nodes:
            raise SiteError(
                path,
                "nodes",
                "a Slurm site does not list nodes: Slurm knows them and places each job",
                "remove the [[nodes]] tables (or the [slurm] table, to run servers locally)",
            )
        slurm = _slurm(path, _table(path, "slurm", raw["slurm"]), slice_types)
        return Site(path, name, currency, run_as, source, sessions, (), slice_types, slurm)
    _check_offer_can_run(path, nodes, slice_types, source)
    return Site(path, name, currency, run_as, source, sessions, nodes, slice_types)


def _slurm_name(path, key, value, check) -> str:
    try:
        return check(value)
    except ValueError as e:
        raise SiteError(path, key, str(e).rstrip("."), "write a name Slurm accepts") from None


def _slurm(path, table, slice_types: Mapping[str, SliceType]) -> SlurmSite:
    """The `[slurm]` table, checked against the offer: every slice type must say how it runs."""
    allowed = {"partition", "devices", "default_account", "accounts", "slice_types", "commands"}
    _no_unknown(path, "slurm", table, allowed)
    if "partition" not in table:
        raise SiteError(
            path, "slurm.partition", "is missing", 'name the default partition: partition = "gpu"'
        )
    partition = _slurm_name(path, "slurm.partition", table["partition"], sc.check_partition)
    devices = _choice(path, "slurm.devices", table.get("devices", "real"), SLURM_DEVICES)
    default_account = table.get("default_account")
    if default_account is not None:
        default_account = _slurm_name(
            path, "slurm.default_account", default_account, sc.check_account
        )
    accounts = {}
    for project, account in _table(path, "slurm.accounts", table.get("accounts", {})).items():
        key = f'slurm.accounts."{project}"'
        if not isinstance(project, str) or not _PROJECT_ID.fullmatch(project):
            raise SiteError(
                path, key, "is not a Slicehub project id", "use the project's id, e.g. ai-lab"
            )
        accounts[project] = _slurm_name(path, key, account, sc.check_account)
    commands = {}
    for name, exe in _table(path, "slurm.commands", table.get("commands", {})).items():
        key = f"slurm.commands.{name}"
        if name not in SLURM_COMMANDS:
            raise SiteError(
                path,
                key,
                "is not a Slurm command Slicehub runs",
                f"use {', '.join(SLURM_COMMANDS)}",
            )
        commands[name] = _slurm_name(path, key, exe, sc.check_executable)

    raw_types = _table(path, "slurm.slice_types", table.get("slice_types", {}))
    for name in raw_types:
        if name not in slice_types:
            raise SiteError(
                path,
                f'slurm.slice_types."{name}"',
                "is not an offered slice type",
                f'remove it, or offer it under [slice_types."{name}"]',
            )
    out = {}
    for name, st in slice_types.items():
        key = f'slurm.slice_types."{name}"'
        spec = _table(path, key, raw_types.get(name, {}))
        _no_unknown(path, key, spec, {"partition", "gres"})
        part = partition
        if "partition" in spec:
            part = _slurm_name(path, f"{key}.partition", spec["partition"], sc.check_partition)
        gres = spec.get("gres")
        if st.shape.kind == "cpu":
            if gres is not None:
                raise SiteError(path, f"{key}.gres", "a CPU-only slice has no GPU", "remove gres")
            out[name] = SlurmSliceType(part, None, 0)
            continue
        if gres is None:
            raise SiteError(
                path,
                f"{key}.gres",
                "is missing: Slicehub does not guess which GRES makes this slice",
                'name the GRES type of gpu that Slurm has for it, e.g. gres = "1g.10gb" '
                "(see `sinfo -o %G`)",
            )
        gres = _slurm_name(path, f"{key}.gres", gres, sc.check_gres_type)
        count = st.shape.count if st.shape.kind == "gpu" else 1
        out[name] = SlurmSliceType(part, gres, count)
    return SlurmSite(partition, devices, out, accounts, default_account, commands)


def _sessions(path, table) -> SessionLimits:
    _no_unknown(path, "sessions", table, {"min_minutes", "max_hours", "default_hours"})
    lo = _int(path, "sessions.min_minutes", table.get("min_minutes", 15), 1, 24 * 60)
    hi = _int(path, "sessions.max_hours", table.get("max_hours", 12), 1, 24 * 31) * 60
    default = table.get("default_hours", 2)
    if isinstance(default, float) and (default * 60).is_integer():
        default = int(default * 60)
    elif isinstance(default, int) and not isinstance(default, bool):
        default = default * 60
    else:
        raise SiteError(
            path,
            "sessions.default_hours",
            f"{default!r} is not a number of hours",
            "write e.g. default_hours = 2",
        )
    if not lo <= hi:
        raise SiteError(
            path,
            "sessions.min_minutes",
            "is longer than sessions.max_hours",
            "make the minimum shorter than the maximum",
        )
    if not lo <= default <= hi:
        raise SiteError(
            path,
            "sessions.default_hours",
            "is outside min_minutes..max_hours",
            "pick a default inside the allowed range",
        )
    return SessionLimits(lo, hi, default)


def _nodes(path, raw_nodes, site_name) -> tuple[inv.Node, ...]:
    if not isinstance(raw_nodes, list):
        raise SiteError(path, "nodes", "must be an array of tables", "write each node as [[nodes]]")
    nodes = []
    seen = set()
    for i, node in enumerate(raw_nodes):
        key = f"nodes[{i}]"
        node = _table(path, key, node)
        _no_unknown(path, key, node, {"name", "cpus", "memory", "gpus"})
        name = node.get("name")
        if not isinstance(name, str) or not name or not name.replace("-", "").isalnum():
            raise SiteError(
                path,
                f"{key}.name",
                f"{name!r} is not a node name",
                'use letters, digits and "-", e.g. "gpu-node-01"',
            )
        if name in seen:
            raise SiteError(
                path, f"{key}.name", f"{name!r} appears twice", "give each node its own name"
            )
        seen.add(name)
        cpus = _int(path, f"{key}.cpus", node.get("cpus"), 1, 4096)
        memory = _bytes(path, f"{key}.memory", node.get("memory"))
        gpus = node.get("gpus", [])
        if not isinstance(gpus, list):
            raise SiteError(
                path, f"{key}.gpus", "must be an array of tables", "write [[nodes.gpus]]"
            )
        nodes.append(
            inv.Node(
                name=name,
                cpus=cpus,
                memory_bytes=memory,
                gpus=tuple(
                    _gpu(path, f"{key}.gpus[{j}]", g, site_name, name, j)
                    for j, g in enumerate(gpus)
                ),
                declared=True,
            )
        )
    return tuple(nodes)


def _gpu(path, key, raw, site_name, node, index) -> inv.Gpu:
    raw = _table(path, key, raw)
    _no_unknown(path, key, raw, {"model", "mig"})
    try:
        model = gpu_model(raw.get("model"))
    except KeyError as e:
        raise SiteError(
            path, f"{key}.model", str(e.args[0]), "use one of the known models"
        ) from None
    mig = raw.get("mig", False)
    if mig is False:
        return inv.declared_gpu(site_name, node, index, model.name, inv.MIG_NONE)
    if mig == "dynamic":
        return inv.declared_gpu(site_name, node, index, model.name, inv.MIG_DYNAMIC)
    if not isinstance(mig, list) or not mig or not all(isinstance(p, str) for p in mig):
        raise SiteError(
            path,
            f"{key}.mig",
            f"{mig!r} is not a MIG layout",
            'write a list of profiles such as ["4g.40gb", "3g.40gb"], '
            '"dynamic", or leave it out for a whole GPU',
        )
    for profile in mig:
        if not model.has_profile(profile):
            known = ", ".join(p.name for p in model.profiles)
            raise SiteError(
                path,
                f"{key}.mig",
                f"{profile!r} is not a MIG profile of the {model.name}",
                f"use its profiles: {known}",
            )
    layout = solve_layout(model, mig)
    if layout is None:
        raise SiteError(
            path,
            f"{key}.mig",
            f"a {model.name} cannot hold {' + '.join(mig)} at once (NVIDIA's MIG placement table)",
            "choose profiles that fit together, e.g. 4g + 3g, or 3g + 2g + 1g + 1g",
        )
    return inv.declared_gpu(site_name, node, index, model.name, inv.MIG_STATIC, layout)


def _slice_types(path, table) -> dict[str, SliceType]:
    if not table:
        raise SiteError(
            path, "slice_types", "offers nothing", 'add at least one [slice_types."<name>"] table'
        )
    out = {}
    for name, spec in table.items():
        key = f'slice_types."{name}"'
        try:
            shape = parse_slice_type(name)
        except ValueError as e:
            raise SiteError(path, key, str(e), "rename the slice type") from None
        spec = _table(path, key, spec)
        _no_unknown(path, key, spec, {"cpus", "memory", "price_per_hour", "description"})
        for required in ("cpus", "memory", "price_per_hour"):
            if required not in spec:
                raise SiteError(
                    path,
                    f"{key}.{required}",
                    "is missing",
                    f"every offered slice type needs {required}",
                )
        try:
            price = parse_cents(spec["price_per_hour"])
        except ValueError as e:
            raise SiteError(
                path,
                f"{key}.price_per_hour",
                str(e),
                'write the HK$ list price per hour as a string, e.g. "38.00"',
            ) from None
        out[name] = SliceType(
            name=name,
            shape=shape,
            cpus=_int(path, f"{key}.cpus", spec["cpus"], 1, 4096),
            memory_bytes=_bytes(path, f"{key}.memory", spec["memory"]),
            price_cents=price,
            description=str(spec.get("description", shape.describe())),
        )
    return out


def _check_offer_can_run(path, nodes, slice_types, source) -> None:
    """Refuse to offer a slice type that no node could ever run (Open OnDemand's classic)."""
    if source == "nvml":
        return  # the inventory is only known once NVML answers; checked again at start-up
    for name, st in slice_types.items():
        key = f'slice_types."{name}"'
        fits_node = [n for n in nodes if n.cpus >= st.cpus and n.memory_bytes >= st.memory_bytes]
        if not fits_node:
            raise SiteError(
                path,
                key,
                f"needs {st.cpus} CPUs and {st.memory_bytes} bytes, more than any node has",
                "lower cpus/memory or add a bigger node",
            )
        if not can_ever_run(st.shape, fits_node):
            raise SiteError(
                path,
                key,
                "no node in this site has hardware for it",
                "remove it from slice_types or declare a GPU that provides it",
            )


def can_ever_run(shape: SliceShape, nodes) -> bool:
    if shape.kind == "cpu":
        return bool(nodes)
    for node in nodes:
        gpus = [g for g in node.gpus if g.model == shape.model]
        if shape.kind == "gpu" and sum(g.mig == inv.MIG_NONE for g in gpus) >= shape.count:
            return True
        if shape.kind == "mig":
            for g in gpus:
                if g.mig == inv.MIG_DYNAMIC:
                    return True
                if g.mig == inv.MIG_STATIC and any(
                    i.placement.profile == shape.profile for i in g.instances
                ):
                    return True
    return False

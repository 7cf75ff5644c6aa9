"""The site file's [slurm] table: how this site's slice types and projects map onto the cluster
(the partition and GRES behind each slice type, the Slurm account of each project, the commands'
paths). Every offered slice type must say how it runs; a value Slurm would not accept is refused
with the key and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicehub.common.names import PROJECT_ID
from slicehub.config_file import check_choice, check_known, check_table

from ..site_model import Site, SiteError, SliceType, parse_head, parse_slice_types, read_toml
from . import commands as sc

SLURM_DEVICES = ("real", "declared")
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")


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


def _slurm_name(path, key, value, check) -> str:
    try:
        return check(value)
    except ValueError as e:
        raise SiteError(path, key, str(e).rstrip("."), "write a name Slurm accepts") from None


def parse_slurm(path, table, slice_types: Mapping[str, SliceType]) -> SlurmSite:
    """The `[slurm]` table, checked against the offer: every slice type must say how it runs."""
    allowed = {"partition", "devices", "default_account", "accounts", "slice_types", "commands"}
    check_known(path, "slurm", table, allowed)
    if "partition" not in table:
        raise SiteError(
            path, "slurm.partition", "is missing", 'name the default partition: partition = "gpu"'
        )
    partition = _slurm_name(path, "slurm.partition", table["partition"], sc.check_partition)
    devices = check_choice(path, "slurm.devices", table.get("devices", "real"), SLURM_DEVICES)
    default_account = table.get("default_account")
    if default_account is not None:
        default_account = _slurm_name(
            path, "slurm.default_account", default_account, sc.check_account
        )
    accounts = {}
    for project, account in check_table(path, "slurm.accounts", table.get("accounts", {})).items():
        key = f'slurm.accounts."{project}"'
        if not isinstance(project, str) or not PROJECT_ID.fullmatch(project):
            raise SiteError(
                path, key, "is not a Slicehub project id", "use the project's id, e.g. ai-lab"
            )
        accounts[project] = _slurm_name(path, key, account, sc.check_account)
    commands = {}
    for name, exe in check_table(path, "slurm.commands", table.get("commands", {})).items():
        key = f"slurm.commands.{name}"
        if name not in SLURM_COMMANDS:
            raise SiteError(
                path,
                key,
                "is not a Slurm command Slicehub runs",
                f"use {', '.join(SLURM_COMMANDS)}",
            )
        commands[name] = _slurm_name(path, key, exe, sc.check_executable)

    raw_types = check_table(path, "slurm.slice_types", table.get("slice_types", {}))
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
        spec = check_table(path, key, raw_types.get(name, {}))
        check_known(path, key, spec, {"partition", "gres"})
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


def load_slurm_site(path: Path | str) -> Site:
    raw, path = read_toml(path)
    if "slurm" not in raw:
        raise SiteError(
            path,
            "slurm",
            "is missing: this is not a Slurm site",
            "add a [slurm] table, or use the local spawner for this site file",
        )
    return parse_slurm_site(raw, path)


def parse_slurm_site(raw: dict[str, Any], path: Path) -> Site:
    head = parse_head(raw, path)
    slice_types = parse_slice_types(raw, path)
    if raw.get("nodes"):
        raise SiteError(
            path,
            "nodes",
            "a Slurm site does not list nodes: Slurm knows them and places each job",
            "remove the [[nodes]] tables (or the [slurm] table, to run servers locally)",
        )
    slurm = parse_slurm(path, check_table(path, "slurm", raw["slurm"]), slice_types)
    return Site(path, *head[:4], head.sessions, (), slice_types, slurm)

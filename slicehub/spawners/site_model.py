"""A site as data: the slice types it offers (CPUs, memory, list price), the limits on a
session's length, and the parts of a site file every site has ([site], [sessions],
[slice_types]). Each slice source reads its own part of the file (`local.site`: the nodes;
`slurm.site`: the [slurm] table); `slicehub.spawners.site` reads a file of either kind.

This module decides what is *offered*; the sources decide what is *free*.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from slicehub.common.catalogue import SliceShape, parse_slice_type
from slicehub.common.money import parse_cents
from slicehub.config_file import (
    ConfigFileError,
    check_bytes,
    check_choice,
    check_int,
    check_known,
    check_table,
)

if TYPE_CHECKING:  # each source's part of a site, as types only
    from .local.inventory import Node
    from .slurm.site import SlurmSite

SiteError = ConfigFileError  # a problem in a site file: the file, the key, the fix

# [parking] is the quota service's (slicehub.quota.site_parking); the hub checks it at start
TABLES = {"site", "sessions", "nodes", "slice_types", "slurm", "parking"}
RUN_AS = ("hub-user", "unix-users")
INVENTORY_SOURCES = ("declared", "nvml", "auto")


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
class Site:
    path: Path
    name: str
    currency: str
    run_as: str
    inventory_source: str
    sessions: SessionLimits
    nodes: tuple[Node, ...]  # servers on the site's own nodes (local.site)
    slice_types: Mapping[str, SliceType] = field(default_factory=dict)
    slurm: SlurmSite | None = None  # servers run as Slurm jobs; Slurm places them


class Head(NamedTuple):
    """The [site] and [sessions] tables."""

    name: str
    currency: str
    run_as: str
    inventory_source: str
    sessions: SessionLimits


def read_toml(path: Path | str) -> tuple[dict[str, Any], Path]:
    """A site file's tables, or SiteError saying why it cannot be read."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text()), path
    except FileNotFoundError:
        raise SiteError(
            path, "(file)", "does not exist", "point SLICEHUB_SITE at a site file"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SiteError(
            path, "(syntax)", f"is not valid TOML ({e})", "correct the syntax"
        ) from None


def parse_head(raw: dict[str, Any], path: Path) -> Head:
    check_known(path, "", raw, TABLES)
    head = check_table(path, "site", raw.get("site", {}))
    check_known(path, "site", head, {"name", "currency", "run_as", "inventory"})
    name = head.get("name", "slicehub")
    if not isinstance(name, str) or not name:
        raise SiteError(path, "site.name", "must be a non-empty string", 'write name = "my-centre"')
    currency = check_choice(path, "site.currency", head.get("currency", "HKD"), ("HKD",))
    run_as = check_choice(path, "site.run_as", head.get("run_as", "unix-users"), RUN_AS)
    source = check_choice(
        path, "site.inventory", head.get("inventory", "declared"), INVENTORY_SOURCES
    )
    sessions = _sessions(path, check_table(path, "sessions", raw.get("sessions", {})))
    return Head(name, currency, run_as, source, sessions)


def parse_slice_types(raw: dict[str, Any], path: Path) -> dict[str, SliceType]:
    return _slice_types(path, check_table(path, "slice_types", raw.get("slice_types", {})))


def _sessions(path, table) -> SessionLimits:
    check_known(path, "sessions", table, {"min_minutes", "max_hours", "default_hours"})
    lo = check_int(path, "sessions.min_minutes", table.get("min_minutes", 15), 1, 24 * 60)
    hi = check_int(path, "sessions.max_hours", table.get("max_hours", 12), 1, 24 * 31) * 60
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
        spec = check_table(path, key, spec)
        check_known(path, key, spec, {"cpus", "memory", "price_per_hour", "description"})
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
            cpus=check_int(path, f"{key}.cpus", spec["cpus"], 1, 4096),
            memory_bytes=check_bytes(path, f"{key}.memory", spec["memory"]),
            price_cents=price,
            description=str(spec.get("description", shape.describe())),
        )
    return out

"""The site file: what a deployment offers, read from TOML and checked before the hub starts.

A site file names the nodes and GPUs (declared, or discovered through NVML), the slice types
offered with their CPUs, memory and list price, and the limits on a session's duration. A site
whose servers run as Slurm jobs has a `[slurm]` table instead of nodes: the partition and GRES
type behind each slice type and the Slurm account of each project (Slurm knows the nodes). Every
problem is reported as a `SiteError` that names the file, the key and the fix, so a bad edit
stops the hub at start-up instead of surfacing as a failed spawn hours later.

This module reads a site file of either kind (the hub's configuration, `slicehub check-site`);
each source's own spawner reads only its kind (`local.site`, `slurm.site`), and the parts every
site has are `site_model`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .local.manager import resolve_inventory
from .local.site import parse_local_site
from .site_model import SessionLimits, Site, SiteError, SliceType, read_toml
from .slurm.offer import check_cluster
from .slurm.site import parse_slurm_site

__all__ = [
    "SessionLimits",
    "Site",
    "SiteError",
    "SliceType",
    "check_site",
    "load_site",
    "parse_site",
]


def load_site(path: Path | str) -> Site:
    """Read and check a site file. Raises SiteError naming the key and the fix."""
    raw, path = read_toml(path)
    return parse_site(raw, path)


def parse_site(raw: dict[str, Any], path: Path | str = "<site>") -> Site:
    """A site with a [slurm] table runs its servers as Slurm jobs; any other on its nodes."""
    if "slurm" in raw:
        return parse_slurm_site(raw, Path(path))
    return parse_local_site(raw, Path(path))


def check_site(path: Path | str) -> Site:
    """Load a site file and check that it can run here: a Slurm site against the cluster's
    partitions and GRES types (`sinfo`; a cluster that does not answer is not fatal), a local
    one by building the inventory it names now (NVML or declared). Raises SiteError."""
    site = load_site(path)
    if site.slurm is not None:
        check_cluster(site)
    else:
        resolve_inventory(site)
    return site

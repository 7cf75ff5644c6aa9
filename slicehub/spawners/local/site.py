"""The site file's part for servers on this machine room: the [[nodes]] tables (nodes, their
CPUs, memory and GPUs, each GPU whole or MIG with a layout that NVIDIA's placement table allows),
and the check that every offered slice type could run on some node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicehub.common.catalogue import SliceShape, gpu_model, solve_layout
from slicehub.config_file import check_bytes, check_int, check_known, check_table

from ..site_model import Site, SiteError, parse_head, parse_slice_types, read_toml
from . import inventory as inv


@dataclass(frozen=True)
class LocalSite(Site):
    """A site whose servers run on its own nodes, declared or discovered."""

    def inventory(self) -> inv.Inventory:
        return inv.Inventory(self.nodes)


def load_local_site(path: Path | str) -> LocalSite:
    raw, path = read_toml(path)
    if "slurm" in raw:
        raise SiteError(
            path,
            "slurm",
            "this site runs servers as Slurm jobs, not on its own nodes",
            'use the Slurm spawner (spawner_class = "slicehub-slurm") for this site file',
        )
    return parse_local_site(raw, path)


def parse_local_site(raw: dict[str, Any], path: Path) -> LocalSite:
    head = parse_head(raw, path)
    nodes = parse_nodes(path, raw.get("nodes", []), head.name)
    slice_types = parse_slice_types(raw, path)
    check_offer_can_run(path, nodes, slice_types, head.inventory_source)
    return LocalSite(path, *head[:4], head.sessions, nodes, slice_types)


def parse_nodes(path, raw_nodes, site_name) -> tuple[inv.Node, ...]:
    if not isinstance(raw_nodes, list):
        raise SiteError(path, "nodes", "must be an array of tables", "write each node as [[nodes]]")
    nodes = []
    seen = set()
    for i, node in enumerate(raw_nodes):
        key = f"nodes[{i}]"
        node = check_table(path, key, node)
        check_known(path, key, node, {"name", "cpus", "memory", "gpus"})
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
        cpus = check_int(path, f"{key}.cpus", node.get("cpus"), 1, 4096)
        memory = check_bytes(path, f"{key}.memory", node.get("memory"))
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
    raw = check_table(path, key, raw)
    check_known(path, key, raw, {"model", "mig"})
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


def check_offer_can_run(path, nodes, slice_types, source) -> None:
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

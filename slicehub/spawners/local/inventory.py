"""The inventory: which nodes, GPUs and MIG instances a site has.

Two sources give the same plain data. Where GPUs exist, NVML (`slicehub.spawners.local.nvml`)
reports them with their real UUIDs. Where they do not (a laptop, CI, a site file describing a
cluster), the site file *declares* them and this module makes stable UUIDs for them; every declared
thing carries `declared=True` so no page, log or environment ever passes it off as real hardware.

This module decides nothing about who holds what; see `slicehub.spawners.local.allocator`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from slicehub.common.catalogue import MEMORY_SLOTS, Placement, gpu_model

# Declared UUIDs are uuid5 names under this namespace, so the same site file always
# produces the same UUIDs (reservations survive a restart and still match).
DECLARED_NAMESPACE = uuid.UUID("5f1c3e2a-8d4b-4c1e-9a7f-2b6d0e9c4a10")

MIG_NONE = "none"  # the GPU is handed out whole
MIG_STATIC = "static"  # MIG instances exist (created by the site); the allocator picks among them
MIG_DYNAMIC = "dynamic"  # instances are carved on demand following NVIDIA's placement table
MIG_MODES = (MIG_NONE, MIG_STATIC, MIG_DYNAMIC)


@dataclass(frozen=True)
class MigInstance:
    """An existing MIG instance (static layout): where it sits and the UUID CUDA knows it by."""

    placement: Placement
    uuid: str
    memory_bytes: int


@dataclass(frozen=True)
class Gpu:
    node: str
    index: int
    uuid: str
    model: str  # catalogue GpuModel.name
    mig: str  # one of MIG_MODES
    instances: tuple[MigInstance, ...] = ()  # for MIG_STATIC
    declared: bool = True
    memory_bytes: int = 0

    @property
    def layout_key(self) -> tuple:
        """GPUs with equal keys behave identically in the allocator."""
        if self.mig == MIG_STATIC:
            return (self.model, self.mig, tuple(i.placement for i in self.instances))
        return (self.model, self.mig)

    def instance_at(self, placement: Placement) -> MigInstance | None:
        for inst in self.instances:
            if inst.placement == placement:
                return inst
        return None

    def mig_uuid(self, placement: Placement) -> str:
        """The UUID of the MIG instance at `placement` (a static one's, or a declared one's)."""
        inst = self.instance_at(placement)
        if inst is not None:
            return inst.uuid
        if not self.declared:
            raise LookupError(f"no MIG instance at {placement} on {self.uuid}")
        return declared_mig_uuid(self.uuid, placement)


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_bytes: int
    gpus: tuple[Gpu, ...] = ()
    declared: bool = True
    cpu_ids: tuple[int, ...] = ()  # the host CPUs slices get pinned to; default 0..cpus-1

    def __post_init__(self):
        if not self.cpu_ids:
            object.__setattr__(self, "cpu_ids", tuple(range(self.cpus)))


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[Node, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for n in self.nodes for g in n.gpus)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def declared(self) -> bool:
        return any(n.declared for n in self.nodes) or any(g.declared for g in self.gpus)


def _format_uuid(prefix: str, name: str) -> str:
    return f"{prefix}-{uuid.uuid5(DECLARED_NAMESPACE, name)}"


def declared_gpu_uuid(site: str, node: str, index: int) -> str:
    return _format_uuid("GPU", f"{site}/{node}/{index}")


def declared_mig_uuid(gpu_uuid: str, placement: Placement) -> str:
    return _format_uuid("MIG", f"{gpu_uuid}/{placement.profile}@{placement.start}")


def declared_gpu(
    site: str,
    node: str,
    index: int,
    model_name: str,
    mig: str,
    layout: tuple[Placement, ...] = (),
    gpu_uuid: str | None = None,
) -> Gpu:
    """A GPU described by the site file, with stable made-up UUIDs, marked declared."""
    model = gpu_model(model_name)
    gid = gpu_uuid or declared_gpu_uuid(site, node, index)
    instances = tuple(
        MigInstance(p, declared_mig_uuid(gid, p), model.profile(p.profile).memory_bytes)
        for p in layout
    )
    return Gpu(
        node=node,
        index=index,
        uuid=gid,
        model=model.name,
        mig=mig,
        instances=instances,
        declared=True,
        memory_bytes=model.memory_bytes,
    )


ALL_SLOTS = frozenset(range(MEMORY_SLOTS))

"""Where a server's slice comes from: one protocol, one implementation per kind of machine room.

The spawn form and the start of a server ask a `SliceSource` what they need, and nothing else:
what is on offer (with free counts), whether a project may run here at all, and for a start, a
slice taken before the server launches and given back when it ends. Two implementations:

- `slicehub.spawners.local.source.LocalSlices`: one machine (or a declared fleet) and
  Slicehub's own allocator; a slice is taken before the process starts, durably, and a
  reconcile pass frees what no live server holds. Its settings are LocalSliceSpawner's.
- `slicehub.spawners.slurm.source.SlurmSlices`: a batch cluster places each job itself; free
  counts come from `sinfo`, nothing is taken before `sbatch` (the job's GRES is the slice), and
  a project needs a Slurm account. Its settings are SlurmSliceSpawner's.

A new batch system is one new source (and the spawner that launches its jobs); the mixin that
renders the form, holds the money and writes the environment does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .site_model import Site, SliceType


class NoSliceFree(RuntimeError):
    """No slice of the requested type can be had right now; the message says so plainly."""


@dataclass(frozen=True)
class Availability:
    """Per offered slice type: how many could start now and how many there are (None: the
    source cannot say right now)."""

    slice_type: SliceType
    free: int | None
    capacity: int | None


@dataclass(frozen=True)
class Offer:
    rows: list[Availability]
    declared: bool  # the devices are stand-ins a site file declares, not real GPUs
    queues_when_full: bool  # a start with none free waits in a queue instead of being refused


@dataclass(frozen=True)
class TakenSlice:
    """What a source took for one server, as far as the hub knows before it launches."""

    node: str | None  # None: the batch system picks the node
    devices: tuple[str, ...] | None  # CUDA_VISIBLE_DEVICES; None: the batch system sets it
    declared: bool  # GPU devices that are a site file's stand-ins
    cpu_ids: tuple[int, ...] = ()  # CPUs to pin the server to (local only)

    def describe(self) -> str:
        where = self.node or "the cluster"
        if self.devices:
            where += f" ({', '.join(self.devices)}{', declared' if self.declared else ''})"
        return where


class SliceSource(Protocol):
    site: Site
    # True: take() reserves a slice before the server launches (the local allocator). False: a
    # batch system places the job, and take() only says what the server will get.
    reserves: bool

    async def offer(self) -> Offer:
        """Each offered slice type with its free and total counts, for the form."""

    def admit(self, project: str) -> None:
        """Refuse a project that cannot run here (tornado HTTPError 403), before any hold."""

    async def take(self, holder: str, slice_type: SliceType, session_end: datetime) -> TakenSlice:
        """Take a slice for `holder` ("user/server"), or raise NoSliceFree."""

    async def give_back(self, holder: str) -> None:
        """Give back what `holder` holds; safe to call twice or when it holds nothing."""

    def holds(self, holder: str) -> bool:
        """Whether something is still held for `holder` (after a restart too)."""

    def recover(self, holder: str, saved: TakenSlice | None) -> TakenSlice | None:
        """After a hub restart: what `holder` holds, given what its spawner state saved."""

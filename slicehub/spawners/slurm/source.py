"""Slurm as a slice source: the cluster places each job, so nothing is taken before `sbatch`.

The form's free counts come from one shared `sinfo` (`offer.availability`; None while Slurm does
not answer: everything is offered, counts unknown); a start waits in Slurm's queue when none is
free. A project runs here only with a Slurm account (`[slurm.accounts]`), checked before any
hold. The slice itself is the job's GRES: Slurm sets CUDA_VISIBLE_DEVICES and frees it when the
job ends, so there is nothing to give back.
"""

from __future__ import annotations

from datetime import datetime

from tornado import web

from ..site_model import Site, SliceType
from ..source import Availability, Offer, TakenSlice
from . import offer as slurm_offer
from .client import SlurmClient


class SlurmSlices:
    """A `SliceSource` for one Slurm site; cheap to make (the client is shared)."""

    reserves = False

    def __init__(self, site: Site, client: SlurmClient, sinfo_max_age: float):
        self.site = site
        self.client = client
        self.sinfo_max_age = sinfo_max_age

    async def offer(self) -> Offer:
        nodes = await self.client.nodes(self.sinfo_max_age)
        if nodes is None:  # Slurm did not answer: offer everything, counts unknown
            rows = [Availability(st, None, None) for st in self.site.slice_types.values()]
        else:
            rows = slurm_offer.availability(self.site, nodes)
        return Offer(rows, self.site.slurm.devices == "declared", True)

    def admit(self, project: str) -> None:
        if self.site.slurm.account_for(project) is None:
            raise web.HTTPError(
                403,
                f"Project {project} has no Slurm account on this cluster, so its sessions cannot "
                "run here. Ask the centre's staff to map it ([slurm.accounts] in the site file).",
            )

    async def take(self, holder: str, slice_type: SliceType, session_end: datetime) -> TakenSlice:
        gpu = slice_type.shape.kind != "cpu"
        return TakenSlice(None, None, gpu and self.site.slurm.devices == "declared")

    async def give_back(self, holder: str) -> None:
        """Slurm frees the slice when the job ends; nothing is held here."""

    def holds(self, holder: str) -> bool:
        return False

    def recover(self, holder: str, saved: TakenSlice | None) -> TakenSlice | None:
        return saved

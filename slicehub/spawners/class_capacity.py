"""Can the site hold a class window at all? Asked when staff create one, so that a window too
large for the site is refused then, with the numbers, and not discovered at 9:00.

On the local spawner: the window's seats placed one by one on the site's whole inventory, empty
(`local.class_hold.plan_class_hold`); on Slurm: the nodes a reservation would take, from what
`sinfo` says the nodes are now and the reservations already made
(`slurm.reservation.plan_reservation`). A refusal is `ClassWindowRefused` (a ValueError whose
sentence has the numbers). When Slurm does not answer, nothing can be concluded: the window is
accepted and the answer says it was not checked (the classroom service checks again when it
reserves, and logs a window it cannot hold).
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime

from .class_window import MAX_WINDOW_ID, ClassWindowNeed
from .local.class_hold import plan_class_hold
from .local.manager import resolve_inventory
from .site import load_site
from .slurm import reservation as rv
from .slurm.offer import check_cluster


def check_window_capacity(
    site_path: str, course: str, slice_type: str, seats: int, starts_at: datetime, ends_at: datetime
) -> str:
    """ "" when the site at `site_path` holds `seats` slices of `slice_type` from `starts_at` to
    `ends_at`; a sentence when it could not be checked; ClassWindowRefused when it cannot."""
    site = load_site(site_path)
    st = site.slice_types.get(slice_type)
    if st is None:
        raise ValueError(f"{slice_type} is not offered by this site ({site.path}).")
    need = ClassWindowNeed(course, MAX_WINDOW_ID, starts_at, ends_at, st, seats)
    if site.slurm is None:
        plan_class_hold(need, resolve_inventory(site))
        return ""
    nodes = check_cluster(site)
    if nodes is None:
        return "Slurm did not answer, so the window's size was not checked against the cluster."
    argv = rv.show_reservations_argv(executable=site.slurm.command("scontrol"))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=15, check=False, env=os.environ
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or (done.returncode != 0 and rv.NO_RESERVATIONS not in done.stdout):
        shown = []  # other reservations unknown: the cluster's nodes alone are checked
    else:
        shown = rv.parse_reservations(done.stdout)
    rv.plan_reservation(need, site.slurm.slice_types[slice_type], nodes, shown)
    return ""

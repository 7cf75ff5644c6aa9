"""The spawn form: for the user's projects, each slice type it may use with its price, the
subsidy's share, the co-pay, the hours the allocation buys and whether one is free.

Rendered with Jinja (autoescaped) from the package's template or an admin's own file
(`options_form_template`). What is offered comes from `form_offer` (pure); this module only
lays it out. The options the form posts go through the same validator as a REST start
(`slicehub.spawners.options`).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
from markupsafe import Markup

from slicehub.common.durations import duration_text, duration_words, hours_text
from slicehub.common.money import format_money

from . import form_offer
from .site_model import SessionLimits
from .source import Offer

TEMPLATES = Path(__file__).parent / "templates"
FORM = "options_form.html.j2"

# what the form offers when no quota service is configured: one nameless project that may use
# every type, at list price (tests of the allocator alone)
NO_LEDGER = {
    "project": "",
    "name": "",
    "subsidy_rate_bp": 0,
    "allowed_slice_types": ["*"],
    "policy": "stop",
    "subsidy_left_cents": 0,
    "credit_left_cents": 0,
}


def human_bytes(n: int) -> str:
    if n <= 0:
        return "—"
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def form_template(path: str) -> jinja2.Template:
    """The spawn form's template: an admin's file, or the one in the package. Jinja keeps the
    compiled template and reloads it when the file changes."""
    folder, name = (Path(path).parent, Path(path).name) if path else (TEMPLATES, FORM)
    return _template_env(str(folder)).get_template(name)


@functools.cache
def _template_env(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([folder]), autoescape=True)
    env.filters["hours"] = _hours
    env.filters["money"] = format_money
    env.filters["buys"] = _buys
    env.filters["when"] = _when
    return env


def _hours(value) -> str:
    """2.0 -> "2", 0.25 -> "0.25": hours as people write them."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return ""


def _buys(hours: float) -> str:
    """What an allocation buys, in words: "91.3 h", "25 min", "nothing"."""
    return "nothing" if hours * 60 < 1 else hours_text(hours)


def _when(iso: str) -> Markup:
    """A time for people: a <time> element the page shows in the browser's zone (the UTC text
    stays when scripts do not run)."""
    moment = datetime.fromisoformat(iso)
    return Markup('<time datetime="{}" class="slicehub-time">{}</time>').format(
        iso, f"{moment:%Y-%m-%d %H:%M} UTC"
    )


def parked_notice(last: dict | None) -> Markup | None:
    """Why the user's server is not running, when its last session was parked: when, after how
    long idle, what it cost and what went back to the project; None otherwise."""
    if not last or last.get("stop_reason") != "parked" or not last.get("stopped_at"):
        return None
    returned = max(last["hold_list_cents"] - last["charged_list_cents"], 0)
    return Markup(
        "Your last session ({} for project {}) was parked at {} after {} without activity: "
        "your open documents were saved, it was charged {}, and the {} it still held went back "
        "to {}. Your choices are filled in below: start again when you are ready."
    ).format(
        last["slice_type"],
        last["project"],
        _when(last["stopped_at"]),
        duration_text(timedelta(seconds=last.get("idle_seconds", 0))),
        format_money(last["charged_list_cents"]),
        format_money(returned),
        last["project"],
    )


def render_form(
    template_path: str,
    offer: Offer,
    projects: list[dict] | None,
    quota_problem: str | None,
    previous: dict,
    limits: SessionLimits,
    now: datetime,
    notice: Markup | None = None,
) -> str:
    """The form's HTML. `projects`: the quota service's view of the user's projects (None: no
    ledger is configured); `previous`: the options of the user's last start; `notice`: why the
    last session ended, when the user should know (`parked_notice`)."""
    rows = {
        av.slice_type.name: {
            "description": av.slice_type.description,
            "cpus": av.slice_type.cpus,
            "memory": human_bytes(av.slice_type.memory_bytes),
            "gpu_memory": human_bytes(av.slice_type.gpu_memory_bytes)
            if av.slice_type.shape.kind != "cpu"
            else "—",
            "declared": av.slice_type.shape.kind != "cpu" and offer.declared,
        }
        for av in offer.rows
    }
    offers = form_offer.offer(
        projects if projects is not None else [NO_LEDGER],
        offer.rows,
        offer.queues_when_full,
        now,
    )
    ids = [o.id for o in offers]
    selected_project = previous.get("project")
    if selected_project not in ids:
        selected_project = ids[0] if ids else None
    return form_template(template_path).render(
        offers=offers,
        rows=rows,
        ledger=projects is not None,
        selected_project=selected_project,
        selected=previous.get("slice_type"),
        quota_problem=quota_problem,
        notice=notice,
        declared=offer.declared,
        min_hours=limits.min_minutes / 60,
        max_hours=limits.max_minutes / 60,
        min_words=duration_words(limits.min_minutes),
        max_words=duration_words(limits.max_minutes),
        # quarter hours, unless the site allows lengths that are not (a test's 1 minute)
        duration_step="0.25" if limits.min_minutes % 15 == 0 else "any",
        default_hours=float(previous.get("duration_hours", limits.default_minutes / 60)),
    )

"""User options: the one validator that the spawn form and the REST API both go through.

A request names a slice type and a duration (and the project to charge); nothing else is
accepted, except `prewarm_window`, which only Slicehub's classroom service may send (the
spawner checks who asked: `SliceSpawnerMixin.open_session`). Whatever arrives here is
hostile until checked: unknown keys, wrong types, names with shell metacharacters and absurd
durations are refused with a sentence that says what is wrong and what is allowed. Only the
checked `SliceOptions` travels further (to the allocator, the environment, a batch script).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slicehub.common.durations import duration_words
from slicehub.common.names import PROJECT_ID, SLICE_TYPE_NAME

from .site_model import Site, SliceType

ALLOWED_KEYS = ("project", "slice_type", "duration_hours", "prewarm_window")
FORM_ONLY_KEYS = ("_xsrf",)  # JupyterHub's spawn page adds its CSRF token to the form data


class OptionsError(ValueError):
    """A user's request that cannot be honoured; the message is shown to them as is."""


@dataclass(frozen=True)
class SliceOptions:
    slice_type: SliceType
    duration_minutes: int
    project: str | None = None  # None: the user's only project, found at start
    prewarm_window: int | None = None  # started ahead of that class window (the course's)

    def to_user_options(self) -> dict:
        out = {"slice_type": self.slice_type.name, "duration_hours": self.duration_minutes / 60}
        if self.project:
            out["project"] = self.project
        if self.prewarm_window is not None:
            out["prewarm_window"] = self.prewarm_window
        return out


def _show(value: Any) -> str:
    """A short, safe rendering of a hostile value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_options(raw: Any, site: Site) -> SliceOptions:
    if not isinstance(raw, dict):
        raise OptionsError(
            "Options must be a JSON object such as "
            '{"slice_type": "h100.1g.10gb", "duration_hours": 2}.'
        )
    unknown = sorted(str(k) for k in raw if k not in ALLOWED_KEYS)
    if unknown:
        raise OptionsError(
            f"Unknown option {_show(unknown[0])}: the options are {', '.join(ALLOWED_KEYS)}."
        )
    offered = ", ".join(site.slice_types)
    name = raw.get("slice_type")
    if name is None:
        raise OptionsError(f"Choose a slice type (slice_type): one of {offered}.")
    if not isinstance(name, str):
        raise OptionsError(f"slice_type must be a string, not {type(name).__name__}.")
    if not SLICE_TYPE_NAME.fullmatch(name):
        raise OptionsError(f"{_show(name)} is not a slice type name; offered here: {offered}.")
    slice_type = site.slice_types.get(name)
    if slice_type is None:
        raise OptionsError(f"Slice type {name} is not offered here; offered: {offered}.")

    limits = site.sessions
    hours = raw.get("duration_hours", limits.default_minutes / 60)
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise OptionsError(f"duration_hours must be a number of hours, not {_show(hours)}.")
    if not math.isfinite(hours):
        raise OptionsError("duration_hours must be a finite number of hours.")
    minutes = round(hours * 60)
    if not limits.min_minutes <= minutes <= limits.max_minutes:
        raise OptionsError(
            f"A session lasts from {duration_words(limits.min_minutes)} to "
            f"{duration_words(limits.max_minutes)}; {_show(hours)} hours is outside that."
        )
    project = raw.get("project")
    if project is not None:
        if not isinstance(project, str):
            raise OptionsError(f"project must be a string, not {type(project).__name__}.")
        if project == "":
            project = None
        elif not PROJECT_ID.fullmatch(project):
            raise OptionsError(f"{_show(project)} is not a project id.")
    window = raw.get("prewarm_window")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window < 2**31:
            raise OptionsError(f"prewarm_window must be a class window's id, not {_show(window)}.")
        if project is None:
            raise OptionsError("A pre-warmed server names its course (project).")
    return SliceOptions(slice_type, minutes, project, window)


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, Any]:
    """Turn the form's lists of strings into the same shape a REST client sends.

    Only typing happens here; `validate_options` judges the result, so both paths agree.
    """
    out: dict[str, Any] = {}
    for key, values in formdata.items():
        if key in FORM_ONLY_KEYS:
            continue
        value = values[0] if isinstance(values, list) and len(values) == 1 else values
        if key == "duration_hours" and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass  # left a string: validate_options says it is not a number
        out[key] = value
    return out

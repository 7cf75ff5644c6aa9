"""Lengths of time as people read them. Three renderings, each written once:

- `duration_text`: how long something lasts or is left: "2 h 05 min", "12 h", "9 min", "42 s"
  (hold refusals, the kernel's time left);
- `duration_words`: a bound in a sentence, spelled out: "1 minute", "90 minutes", "24 hours"
  (the allowed range of a session or an extension);
- `hours_text`: a quantity of hours, rounded down: "46 min", "51.9 h" (what an allocation buys).
"""

from __future__ import annotations

from datetime import timedelta


def duration_text(length: timedelta) -> str:
    """Rounded down to what is shown; a negative length reads as "0 s"."""
    seconds = max(int(length.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{seconds} s"


def duration_words(minutes: int) -> str:
    """ "1 minute", "90 minutes", "2 hours": a whole number of minutes as people say it."""
    if minutes % 60 == 0:
        h = minutes // 60
        return f"{h} hour" + ("s" if h != 1 else "")
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


def hours_text(hours: float) -> str:
    """Hours, rounded down: under one hour in whole minutes ("46 min"), else to a tenth
    ("51.9 h")."""
    if hours < 1:
        return f"{int(hours * 60)} min"
    return f"{int(hours * 10) / 10:g} h"

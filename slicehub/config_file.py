"""Reading values out of Slicehub's own TOML files (the site file, the deployment file): each
problem a `ConfigFileError` that names the file, the key, what is wrong and the fix, so a bad
edit reads the same wherever it is and stops the hub at start-up, not hours later."""

from __future__ import annotations

from pathlib import Path

from jupyterhub.traitlets import ByteSpecification
from traitlets import TraitError


class ConfigFileError(ValueError):
    """A problem in one of Slicehub's files: which file, which key, what is wrong, the fix."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str):
        self.path, self.key, self.problem, self.fix = str(path), key, problem, fix
        super().__init__(f"{path}: {key}: {problem}. Fix: {fix}")


def check_bytes(path, key, value) -> int:
    try:
        out = ByteSpecification().validate(None, value)
    except TraitError:
        raise ConfigFileError(
            path, key, f"{value!r} is not an amount of memory", 'write e.g. "64G" or "512M"'
        ) from None
    if not isinstance(out, int) or out <= 0:
        raise ConfigFileError(path, key, f"{value!r} must be more than zero", 'write e.g. "64G"')
    return out


def check_int(path, key, value, minimum: int = 0, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigFileError(
            path, key, f"{value!r} is not a whole number", f"write a number ≥ {minimum}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
        raise ConfigFileError(path, key, f"{value} is out of range", f"write a number {bound}")
    return value


def check_bool(path, key, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigFileError(path, key, f"{value!r} is not true or false", "write true or false")
    return value


def check_table(path, key, value) -> dict:
    if not isinstance(value, dict):
        raise ConfigFileError(path, key, "must be a table", f"write it as [{key}]")
    return value


def check_known(path, key, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigFileError(
            path,
            f"{prefix}{unknown[0]}",
            "is not a setting Slicehub knows",
            f"remove it or use one of: {', '.join(sorted(allowed))}",
        )


def check_choice(path, key, value, choices) -> str:
    if value not in choices:
        raise ConfigFileError(
            path, key, f"{value!r} is not allowed", f"use one of: {', '.join(choices)}"
        )
    return value


_UNITS = {"s": 1, "min": 60, "h": 3600}


def check_duration(path, key, value, minimum_s: int = 1, maximum_s: int = 7 * 86400) -> int:
    """A length of time written with its unit ("30 min", "20 s", "1 h"), in seconds."""
    number, _, unit = str(value).strip().partition(" ") if isinstance(value, str) else ("", "", "")
    if not (number.isdigit() and unit.strip() in _UNITS):
        raise ConfigFileError(
            path, key, f"{value!r} is not a length of time", 'write e.g. "30 min", "20 s" or "1 h"'
        )
    seconds = int(number) * _UNITS[unit.strip()]
    if not minimum_s <= seconds <= maximum_s:
        raise ConfigFileError(
            path,
            key,
            f"{value} is out of range",
            f"write from {minimum_s} s to {maximum_s // 3600} h",
        )
    return seconds

"""The list prices a site file offers: `[slice_types."<name>"] price_per_hour`, in cents.

The quota service reads them at start-up, to seed the demo ledger and to refuse to start when
the site offers a slice type the ledger has no price for. It reads nothing else of the site
file: the spawners read and check the whole file (`slicehub.spawners.site`), and `quota` never
imports the spawners. A problem is a `SitePriceError` naming the file, the key and the fix, as
the hub's own site check does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from slicehub.common.money import parse_cents


class SitePriceError(ValueError):
    """A site file whose prices cannot be read: which file, which key, what and how to fix it."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str):
        super().__init__(f"{path}: {key}: {problem}. Fix: {fix}")


def read_list_prices(path: Path | str) -> dict[str, int]:
    """slice type -> list price per hour in cents, as the site file at `path` offers them."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SitePriceError(
            path, "(file)", "does not exist", "point --site at the deployment's site file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SitePriceError(path, "(file)", f"cannot be read ({e})", "check the file") from None
    except tomllib.TOMLDecodeError as e:
        raise SitePriceError(
            path, "(syntax)", f"is not valid TOML ({e})", "correct the syntax"
        ) from None
    table = raw.get("slice_types", {})
    if not isinstance(table, dict):
        raise SitePriceError(
            path, "slice_types", "must be a table", 'write [slice_types."<name>"] tables'
        )
    prices = {}
    for name, spec in table.items():
        key = f'slice_types."{name}"'
        if not isinstance(spec, dict):
            raise SitePriceError(path, key, "must be a table", f"write [{key}] with its keys")
        if "price_per_hour" not in spec:
            raise SitePriceError(
                path,
                f"{key}.price_per_hour",
                "is missing",
                "every offered slice type needs price_per_hour",
            )
        try:
            prices[name] = parse_cents(spec["price_per_hour"])
        except ValueError as e:
            raise SitePriceError(
                path,
                f"{key}.price_per_hour",
                str(e),
                'write the HK$ list price per hour as a string, e.g. "38.00"',
            ) from None
    return prices

"""Spawn-to-ready latency through the REST API: Slicehub's hub config against a stock hub.

Two real hubs run side by side on different ports: A (by default hub_config/jupyterhub_config.py
with SLICEHUB_SITE=hub_config/demo-site.toml, i.e. LocalSliceSpawner) and B (JupyterHub's stock
SimpleLocalProcessSpawner). Spawns alternate A, B, A, B, ... so that whatever else the machine does
falls on both alike. One spawn is timed from sending `POST /users/{user}/server` to the first
`GET /users/{user}` that says `ready: true` (polled every 50 ms); the server is then stopped
(untimed) before the next round. Each hub first does untimed warm-up spawns.

    .venv/bin/python bench/spawn_latency.py [--rounds 12] [--write]
    .venv/bin/python bench/spawn_latency.py --a-config stock     # B against B: the noise floor

The goal: median(A) / median(B) <= 1.05.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _common import cpu_model, publish  # noqa: E402
from hubprocess import CONFIGURABLE_HTTP_PROXY, HubProcess, write_stock_config  # noqa: E402

# What A's POST body carries (options of slicehub/spawners/options.py; alice is in two demo
# projects).
A_OPTIONS = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
A_CONFIG = REPO / "hub_config" / "jupyterhub_config.py"
A_ENV = {"SLICEHUB_SITE": str(REPO / "hub_config" / "demo-site.toml")}
GOAL_RATIO = 1.05
RESULTS = REPO / "bench" / "results" / "spawn_latency.md"


# Hub log lines that bracket the spawner's own work before the server process exists:
# User.spawn logs the first, LocalProcessSpawner.start the second right before Popen.
_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
_SPAWN_BEGINS = "Creating oauth client jupyterhub-user-"
_PROCESS_LAUNCHED = "] Spawning "


def prelaunch_ms(log: str, user: str) -> float | None:
    """Milliseconds from the hub beginning a spawn to launching the process, from its log."""
    begun = None
    for line in log.splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        if begun is None and f"{_SPAWN_BEGINS}{user}" in line:
            begun = dt.datetime.fromisoformat(m.group(1))
        elif begun is not None and _PROCESS_LAUNCHED in line:
            return (dt.datetime.fromisoformat(m.group(1)) - begun).total_seconds() * 1000
    return None


class Side:
    """One hub under measurement and its samples."""

    def __init__(self, key: str, label: str, hub: HubProcess, options: dict | None) -> None:
        self.key = key
        self.label = label
        self.hub = hub
        self.options = options
        self.samples: list[float] = []
        self.prelaunch: list[float] = []

    def spawn_once(self, user: str) -> float:
        log_offset = len(self.hub.log_text())
        t0 = time.perf_counter()
        r = self.hub.start_server(user, self.options)
        if r.status_code not in (201, 202):
            raise RuntimeError(
                f"{self.key}: POST server answered {r.status_code}: {r.text}\n{self.hub.log_tail()}"
            )
        self.hub.wait_for_server(user, timeout=120, interval=0.05, record_processes=False)
        elapsed = time.perf_counter() - t0
        ms = prelaunch_ms(self.hub.log_text()[log_offset:], user)
        if ms is not None:
            self.prelaunch.append(ms)
        self.hub.stop_server(user, timeout=60)
        return elapsed


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--a-env wants KEY=VALUE, got {pair!r}")
        # the hub runs in its work directory: a relative path given here means from here
        env[key] = str(Path(value).resolve()) if value and Path(value).exists() else value
    return env


def p95(samples: list[float]) -> float:
    # linear interpolation between order statistics ("inclusive": min and max are p0 and p100)
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def ratio_interval(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b); fixed seed, so reruns agree."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(resamples)
    )
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def _show_env(env: dict[str, str]) -> str:
    shown = [f"`{k}={v.replace(str(REPO) + '/', '')}`" for k, v in sorted(env.items())]
    return ", ".join(shown) or "none"


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ms (n={len(values)})" if values else "n/a"


def chp_version() -> str:
    try:
        pkg = REPO / "node_modules" / "configurable-http-proxy" / "package.json"
        return json.loads(pkg.read_text())["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def compare(sides) -> tuple[list[str], float, float, float, str]:
    """Two spawners' samples (A, B): the table rows, the ratio of medians A/B with its 95%
    bootstrap interval, and the verdict against GOAL_RATIO. Shared with bench/slurm_spawn.py."""
    rows = [
        "| spawner | n | mean (s) | p50 (s) | p95 (s) | min (s) | max (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sides:
        x = s.samples
        rows.append(
            f"| {s.key}: {s.label} | {len(x)} | {statistics.fmean(x):.2f} | "
            f"{statistics.median(x):.2f} | {p95(x):.2f} | {min(x):.2f} | {max(x):.2f} |"
        )
    a, b = sides
    ratio = statistics.median(a.samples) / statistics.median(b.samples)
    low, high = ratio_interval(a.samples, b.samples)
    if high <= GOAL_RATIO:
        verdict = "met"
    elif low > GOAL_RATIO:
        verdict = "NOT met"
    else:
        verdict = (
            f"{'met' if ratio <= GOAL_RATIO else 'not met'} by the point estimate, but the "
            "interval spans the goal: inconclusive at this noise; use more --rounds"
        )
    return rows, ratio, low, high, verdict


def report(sides: list[Side], args: argparse.Namespace) -> str:
    rows, ratio, low, high, verdict = compare(sides)
    a, b = sides
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Spawn-to-ready latency through the REST API",
        "",
        *rows,
        "",
        f"**Ratio of medians A/B: {ratio:.3f}** (95% bootstrap interval {low:.2f} to {high:.2f}; "
        f"goal ≤ {GOAL_RATIO}: {verdict})",
        "",
        f"- Method: both hubs running at once, spawns interleaved A, B, A, B; "
        f"{args.rounds} timed spawns per hub after {args.warmup} untimed warm-up; "
        "timed from sending `POST /users/{user}/server` to the first `ready: true` in "
        "`GET /users/{user}` (polled every 50 ms); server stopped between rounds (untimed). "
        "p95 interpolates between order statistics.",
        "- Spawner work before the server process starts (hub log, `Creating oauth client` to "
        f"`Spawning`), median: A {_median_ms(a.prelaunch)}, B {_median_ms(b.prelaunch)}",
        f"- A options: `{json.dumps(a.options)}`; B options: `{json.dumps(b.options)}`",
        f"- A environment: {_show_env(a.hub.extra_env)}",
        f"- Samples A (s): {', '.join(f'{v:.2f}' for v in a.samples)}",
        f"- Samples B (s): {', '.join(f'{v:.2f}' for v in b.samples)}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}",
        f"- Python {platform.python_version()}, JupyterHub {metadata.version('jupyterhub')}, "
        f"configurable-http-proxy {chp_version()}, node {node_version()}",
        f"- Load average (1 min) before / after: {args.load_before:.2f} / {os.getloadavg()[0]:.2f}",
        f"- Date: {now}",
        "",
    ]
    return "\n".join(lines)


def node_version() -> str:
    node = shutil.which("node")
    if not node:
        return "unknown"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed spawns per hub (>= 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed spawns per hub first")
    parser.add_argument(
        "--a-config",
        default=str(A_CONFIG),
        help="hub config for A, or 'stock' for the stock spawner (default: %(default)s)",
    )
    parser.add_argument(
        "--a-env",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"environment for hub A, repeatable (default: {A_ENV})",
    )
    parser.add_argument(
        "--a-options",
        type=json.loads,
        default=A_OPTIONS,
        help="JSON user options A's POST carries (default: %(default)s)",
    )
    parser.add_argument("--user", default="alice", help="the user spawned on both hubs")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench-data" / "spawn_latency",
        help="emptied, then holds both hubs' files and logs (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")

    if not CONFIGURABLE_HTTP_PROXY.exists():
        raise SystemExit(f"{CONFIGURABLE_HTTP_PROXY} is missing: run `make node_modules`")
    args.load_before = os.getloadavg()[0]
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)

    stock_b = write_stock_config(args.workdir / "stock_config.py", args.workdir / "stock-homes")
    if args.a_config == "stock":
        a_config, a_label, a_env = stock_b, "SimpleLocalProcessSpawner (stock)", {}
    else:
        a_config = Path(args.a_config).resolve()
        shown = a_config.relative_to(REPO) if a_config.is_relative_to(REPO) else a_config
        a_label = f"Slicehub ({shown})"
        a_env = A_ENV
    if args.a_env is not None:
        a_env = parse_env(args.a_env)

    hub_a = HubProcess(a_config, args.workdir / "hub-a", env=a_env)
    hub_b = HubProcess(stock_b, args.workdir / "hub-b")
    sides = [
        Side("A", a_label, hub_a, args.a_options),
        Side("B", "SimpleLocalProcessSpawner (stock)", hub_b, None),
    ]
    return interleave(sides, {s.key: args.user for s in sides}, args, report, RESULTS)


def interleave(sides, users: dict[str, str], args, report, results: Path) -> int:
    """Start both hubs, spawn A, B, A, B (after `args.warmup` untimed spawns each), close the
    hubs, print `report(sides, args)` and write it to `results` with --write. Shared with
    bench/slurm_spawn.py."""
    try:
        for s in sides:
            t0 = time.perf_counter()
            s.hub.start()
            print(f"hub {s.key} up on {s.hub.url} in {time.perf_counter() - t0:.1f} s ({s.label})")
            s.hub.create_user(users[s.key])
        for s in sides:
            for _ in range(args.warmup):
                print(f"warm-up {s.key}: {s.spawn_once(users[s.key]):.2f} s")
        for i in range(args.rounds):
            for s in sides:
                elapsed = s.spawn_once(users[s.key])
                s.samples.append(elapsed)
                print(f"round {i + 1:2d} {s.key}: {elapsed:.2f} s", flush=True)
    finally:
        for s in sides:
            leftovers = s.hub.close()
            if leftovers:
                print(f"hub {s.key} left processes behind, killed: {leftovers}", file=sys.stderr)

    text = report(sides, args)
    print()
    publish(text, results, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

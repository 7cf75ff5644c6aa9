"""Spawn-to-ready through Slurm: Slicehub's SlurmSliceSpawner against batchspawner's stock
SlurmSpawner, on the same test Slurm (scripts/slurm.sh), asking for the same slice.

Two real hubs run side by side: A (hub_config/jupyterhub_config.py with
SLICEHUB_SITE=hub_config/slurm-site.toml: the ledger's hold, the job built from the site file,
argv lists, the shared squeue) and B (batchspawner.SlurmSpawner configured by hand the way its
README shows: the same partition, GRES, CPUs, memory, time and account, its shell-templated
sbatch/squeue). Spawns alternate A, B, A, B, ... Each is timed from sending
`POST /users/{user}/server` to the first `GET /users/{user}` that says `ready: true` (polled every
50 ms); the server is then stopped (untimed). Each hub first does untimed warm-up spawns.

    .venv/bin/python bench/slurm_spawn.py [--rounds 12] [--write]

Needs the test Slurm (`make slurm`; run as root). The goal: median(A) / median(B) <= 1.05.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _common import cpu_model, load_average  # noqa: E402
from hubprocess import CONFIGURABLE_HTTP_PROXY, JUPYTERHUB_SINGLEUSER, HubProcess  # noqa: E402
from spawn_latency import GOAL_RATIO, Side, chp_version, compare, interleave  # noqa: E402

RESULTS = REPO / "bench" / "results" / "slurm_spawn.md"
SLURM_SH = REPO / "scripts" / "slurm.sh"
A_OPTIONS = {"project": "demo-lab", "slice_type": "h100.1g.10gb", "duration_hours": 1}
ACCOUNTS = ("demo-lab", "vision-group")


def slurm_env() -> dict[str, str]:
    """Start (or find) the test Slurm with accounting; make the demo accounts; its exports."""
    done = subprocess.run(
        ["bash", str(SLURM_SH), "start", "--accounting"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"scripts/slurm.sh start failed ({done.returncode}):\n{done.stderr}")
    for account in ACCOUNTS:
        for args in (["ensure-account", account], ["ensure-user", "root", account]):
            subprocess.run(["bash", str(SLURM_SH), *args], check=True, capture_output=True)
    env = {}
    for line in done.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'")
    return env


def write_a_config(path: Path) -> Path:
    path.write_text(
        f"load_subconfig({str(REPO / 'hub_config' / 'jupyterhub_config.py')!r})\n"
        "c.Spawner.http_timeout = 60\n"
    )
    return path


def write_b_config(path: Path, home: Path, slurm_conf: str) -> Path:
    """batchspawner's stock SlurmSpawner, configured for the same job as A's h100.1g.10gb."""
    venv = Path(sys.executable).parent
    args = ["--allow-root"] if os.geteuid() == 0 else []
    path.write_text(
        "# Stock batchspawner.SlurmSpawner (bench/slurm_spawn.py): its own templates and API\n"
        "import batchspawner  # noqa: F401  (registers /hub/api/batchspawner)\n"
        'c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"\n'
        'c.JupyterHub.authenticator_class = "dummy"\n'
        "c.Authenticator.allow_all = True\n"
        f"c.ConfigurableHTTPProxy.command = [{str(CONFIGURABLE_HTTP_PROXY)!r}]\n"
        f"c.Spawner.cmd = [{str(JUPYTERHUB_SINGLEUSER)!r}]\n"
        f"c.Spawner.args = {args!r}\n"
        'c.Spawner.default_url = "/lab"\n'
        "c.Spawner.http_timeout = 60\n"
        # its sbatch gets only the server's environment: the test cluster's config must be in it
        f"c.Spawner.environment = {{'SLURM_CONF': {slurm_conf!r}}}\n"
        f"c.SlurmSpawner.batchspawner_singleuser_cmd = {str(venv / 'batchspawner-singleuser')!r}\n"
        'c.SlurmSpawner.exec_prefix = ""  # the hub runs as root here, as the jobs do\n'
        'c.SlurmSpawner.ip = "127.0.0.1"\n'
        f"c.SlurmSpawner.req_homedir = {str(home)!r}\n"
        'c.SlurmSpawner.req_partition = "gpu"\n'
        'c.SlurmSpawner.req_account = "demo-lab"\n'
        'c.SlurmSpawner.req_gres = "gpu:1g.10gb:1"\n'
        'c.SlurmSpawner.req_nprocs = "1"\n'
        'c.SlurmSpawner.req_memory = "4096M"\n'
        'c.SlurmSpawner.req_runtime = "59"\n'
    )
    return path


def report(sides: list[Side], args: argparse.Namespace) -> str:
    rows, ratio, low, high, verdict = compare(sides)
    a, b = sides
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    return "\n".join(
        [
            "# Spawn-to-ready through Slurm: SlurmSliceSpawner vs batchspawner's SlurmSpawner",
            "",
            *rows,
            "",
            f"**Ratio of medians A/B: {ratio:.3f}** (95% bootstrap interval {low:.2f} to "
            f"{high:.2f}; goal ≤ {GOAL_RATIO}: {verdict})",
            "",
            "- Method: both hubs running at once on the same test Slurm (scripts/slurm.sh: "
            "nodes n1 and n2 on this machine, accounting on), spawns interleaved A, B, A, B; "
            f"{args.rounds} timed spawns per hub after {args.warmup} untimed warm-up; timed from "
            "sending `POST /users/{user}/server` to the first `ready: true` in "
            "`GET /users/{user}` (polled every 50 ms); server stopped between rounds (untimed).",
            "- Both ask Slurm for the same job: partition gpu, `--gres=gpu:1g.10gb:1`, 1 CPU, "
            "4096 MB, account demo-lab, time limit 59 min. A also holds the session's cost in the "
            "ledger (the quota service) before submitting.",
            f"- A options: `{json.dumps(a.options)}`; B: no options (stock batchspawner has no "
            "form of its own)",
            f"- Samples A (s): {', '.join(f'{v:.2f}' for v in a.samples)}",
            f"- Samples B (s): {', '.join(f'{v:.2f}' for v in b.samples)}",
            f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}",
            f"- Python {platform.python_version()}, JupyterHub {metadata.version('jupyterhub')}, "
            f"batchspawner {metadata.version('batchspawner')}, {slurm}, "
            f"configurable-http-proxy {chp_version()}",
            f"- Load average (1 min) before / after: {args.load_before} / {load_average()}",
            f"- Date: {now}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed spawns per hub (>= 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed spawns per hub first")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench-data" / "slurm_spawn",
        help="emptied, then holds both hubs' files and logs (default: %(default)s)",
    )
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS}")
    args = parser.parse_args(argv)
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    if not CONFIGURABLE_HTTP_PROXY.exists():
        raise SystemExit(f"{CONFIGURABLE_HTTP_PROXY} is missing: run `make node_modules`")
    args.load_before = load_average()
    env = slurm_env()
    os.environ.update(env)  # sinfo --version below, and both hubs
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    home_b = args.workdir / "homes" / "root"
    home_b.mkdir(parents=True)

    a_env = {"SLICEHUB_SITE": str(REPO / "hub_config" / "slurm-site.toml"), **env}
    hub_a = HubProcess(write_a_config(args.workdir / "a_config.py"), args.workdir / "hub-a", a_env)
    hub_b = HubProcess(
        write_b_config(args.workdir / "b_config.py", home_b, env["SLURM_CONF"]),
        args.workdir / "hub-b",
    )
    sides = [
        Side("A", "SlurmSliceSpawner (Slicehub)", hub_a, A_OPTIONS),
        Side("B", "batchspawner.SlurmSpawner (stock)", hub_b, None),
    ]
    users = {"A": "alice", "B": "root"}  # stock batchspawner needs a Unix account (pwd)
    return interleave(sides, users, args, report, RESULTS)


if __name__ == "__main__":
    sys.exit(main())

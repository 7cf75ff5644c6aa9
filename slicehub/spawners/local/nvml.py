"""NVML discovery: the GPUs, MIG modes and MIG instances this node really has.

`discover()` asks NVML, read-only, and returns an `inventory.Node` with `declared=False`, or None
when NVML cannot be initialised (no driver or library: a laptop, CI, a login node), in which case
the caller uses the site file's declared inventory. Two steps keep the deciding part pure:
`snapshot()` reads NVML into plain JSON-able data (a refusal kept as `{"error": "NVML_ERROR_..."}`)
and `node_from_snapshot()` turns that into a Node. `record()` writes the snapshot to a file, the
format the test fixtures replay (`python -m slicehub.spawners.local.nvml record out.json`; `...
show` prints what discovery finds here).

Decides: which GPUs are usable, each one's catalogue model, MIG_NONE or MIG_STATIC, and for a MIG
GPU each GPU instance's placement, profile, MIG device UUID and memory. A GPU it cannot account
for exactly (unknown model or profile, a layout NVIDIA's placement table forbids, two compute
instances in one GPU instance, a read NVML refuses) is left out with a warning saying why.

Does not decide: MIG_DYNAMIC (a site setting, never discovered), prices, who holds what. It never
changes GPU state (MIG mode, instances, clocks). GPU instances without a compute instance have no
MIG device and are not seen. NVML ignores CUDA_VISIBLE_DEVICES: this is the whole node.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime

import psutil
import pynvml

from slicehub.common import catalogue

from . import inventory

log = logging.getLogger(__name__)

FORMAT = 1

# NVML return codes by number, so a snapshot names them ("NVML_ERROR_NOT_FOUND").
_ERROR_NAMES = {
    v: k for k, v in vars(pynvml).items() if k.startswith("NVML_ERROR_") and isinstance(v, int)
}
# Profile queries that mean "no such profile on this GPU or driver"; a snapshot leaves them out.
_NO_PROFILE = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_INVALID_ARGUMENT")


# -- reading NVML ---------------------------------------------------------------------------


def _error(exc: pynvml.NVMLError) -> dict:
    return {"error": _ERROR_NAMES.get(exc.value, exc.value)}


def _is_error(entry, name: str | None = None) -> bool:
    return isinstance(entry, dict) and "error" in entry and (name is None or entry["error"] == name)


def _text(value) -> str:
    # pynvml returns str for names and UUIDs, older releases and ctypes struct fields bytes.
    return value.decode() if isinstance(value, bytes) else value


def _read(fn):
    """One NVML read: its value, or the error NVML answered with."""
    try:
        return fn()
    except pynvml.NVMLError as exc:
        return _error(exc)


def snapshot(nvml=None) -> dict:
    """Everything discovery reads from NVML, as plain data. Raises nothing for an NVML refusal
    except from nvmlDeviceGetCount (a driver that answers init but not that is broken)."""
    nvml = pynvml if nvml is None else nvml
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"format": FORMAT, "init": _error(exc), "devices": []}
    try:
        devices = [_read_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    finally:
        nvml.nvmlShutdown()
    return {"format": FORMAT, "init": None, "devices": devices}


def _read_device(nvml, index: int) -> dict:
    handle = _read(lambda: nvml.nvmlDeviceGetHandleByIndex(index))
    if _is_error(handle):
        return handle
    dev = {
        "name": _read(lambda: _text(nvml.nvmlDeviceGetName(handle))),
        "uuid": _read(lambda: _text(nvml.nvmlDeviceGetUUID(handle))),
        "memory_total": _read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total)),
        "mig_mode": _read(lambda: [int(m) for m in nvml.nvmlDeviceGetMigMode(handle)]),
    }
    if _is_error(dev["mig_mode"]) or dev["mig_mode"][0] != pynvml.NVML_DEVICE_MIG_ENABLE:
        return dev
    count = _read(lambda: int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)))
    dev["max_mig_devices"] = count
    dev["mig_devices"] = (
        [] if _is_error(count) else [_read_mig_device(nvml, handle, i) for i in range(count)]
    )
    found = [m["gpu_instance_id"] for m in dev["mig_devices"] if not _is_error(m)]
    ids = sorted({i for i in found if not _is_error(i)})
    dev["gpu_instances"] = {str(i): _read(lambda i=i: _gpu_instance(nvml, handle, i)) for i in ids}
    dev["profile_info_version"], dev["gpu_instance_profiles"] = _read_profiles(nvml, handle)
    return dev


def _read_mig_device(nvml, gpu, index: int) -> dict:
    mig = _read(lambda: nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, index))  # NOT_FOUND: empty
    if _is_error(mig):
        return mig
    return {
        "uuid": _read(lambda: _text(nvml.nvmlDeviceGetUUID(mig))),
        "gpu_instance_id": _read(lambda: int(nvml.nvmlDeviceGetGpuInstanceId(mig))),
        "memory_total": _read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(mig).total)),
    }


def _gpu_instance(nvml, gpu, gi_id: int) -> dict:
    info = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(gpu, gi_id))
    return {
        "profile_id": int(info.profileId),
        "placement_start": int(info.placement.start),
        "placement_size": int(info.placement.size),
    }


def _read_profiles(nvml, gpu, version: int = 2) -> tuple[int, dict]:
    """NVML's GPU instance profiles by NVML_GPU_INSTANCE_PROFILE_* number, as `nvidia-smi mig
    -lgip` lists them. Version 2 of the query carries the name; drivers without it get v1."""
    out = {}
    for profile in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(gpu, profile, version)
        except pynvml.NVMLError as exc:
            if version == 2 and isinstance(exc, pynvml.NVMLError_FunctionNotFound):
                return _read_profiles(nvml, gpu, version=1)
            if _error(exc)["error"] not in _NO_PROFILE:
                out[str(profile)] = _error(exc)
            continue
        fields = {"id": info.id, "slice_count": info.sliceCount, "ofa_count": info.ofaCount}
        out[str(profile)] = {k: int(v) for k, v in fields.items()}
        if version == 2:
            out[str(profile)]["name"] = _text(info.name)
    return version, out


# -- deciding -------------------------------------------------------------------------------


class _Unusable(Exception):
    """Why one GPU is left out of the discovered node."""


def _value(entry, what: str):
    if _is_error(entry):
        raise _Unusable(f"NVML refused to give {what} ({entry['error']})")
    return entry


def node_from_snapshot(
    node_name: str, snap: dict, cpu_ids: tuple[int, ...], memory_bytes: int
) -> inventory.Node | None:
    """The node a snapshot describes; None when NVML was not there at all."""
    if snap.get("format") != FORMAT:
        raise ValueError(f"NVML snapshot format {snap.get('format')!r}; this reads {FORMAT}")
    if _is_error(snap["init"]):
        log.info(
            "NVML not available on %s (%s): no GPUs discovered", node_name, snap["init"]["error"]
        )
        return None
    gpus = []
    for index, dev in enumerate(snap["devices"]):
        try:
            gpus.append(_gpu(node_name, index, dev))
        except _Unusable as why:
            name = dev.get("name") if isinstance(dev.get("name"), str) else "unnamed"
            log.warning(
                "GPU %d (%s) on %s left out of the inventory: %s", index, name, node_name, why
            )
    return inventory.Node(
        name=node_name,
        cpus=len(cpu_ids),
        memory_bytes=memory_bytes,
        gpus=tuple(gpus),
        declared=False,
        cpu_ids=tuple(sorted(cpu_ids)),
    )


def _gpu(node_name: str, index: int, dev: dict) -> inventory.Gpu:
    if _is_error(dev):
        raise _Unusable(f"NVML could not open it ({dev['error']})")
    name = _value(dev["name"], "its name")
    model = catalogue.model_for_nvml_name(name)
    if model is None:
        known = "; ".join(n for m in catalogue.GPU_MODELS.values() for n in m.nvml_names)
        raise _Unusable(f"GPU model {name!r} is not in the catalogue (known: {known})")
    mode, current = dev["mig_mode"], pynvml.NVML_DEVICE_MIG_DISABLE
    if not _is_error(mode, "NVML_ERROR_NOT_SUPPORTED"):  # NOT_SUPPORTED: a GPU without MIG
        current, pending = _value(mode, "its MIG mode")
        if pending != current:
            log.warning("GPU %d on %s: MIG mode change pending a GPU reset", index, node_name)
    mig, instances = inventory.MIG_NONE, ()
    if current == pynvml.NVML_DEVICE_MIG_ENABLE:
        mig, instances = inventory.MIG_STATIC, _instances(model, dev)
        if not instances:
            log.warning("GPU %d on %s is in MIG mode with no MIG instances", index, node_name)
    return inventory.Gpu(
        node=node_name,
        index=index,
        uuid=_value(dev["uuid"], "its UUID"),
        model=model.name,
        mig=mig,
        instances=instances,
        declared=False,
        memory_bytes=_value(dev["memory_total"], "its memory size"),
    )


def _instances(model: catalogue.GpuModel, dev: dict) -> tuple[inventory.MigInstance, ...]:
    _value(dev["max_mig_devices"], "its number of MIG device slots")
    by_gi: dict[int, dict] = {}
    for slot, mig in enumerate(dev["mig_devices"]):
        if _is_error(mig, "NVML_ERROR_NOT_FOUND"):
            continue  # an empty MIG device slot
        _value(mig, f"MIG device {slot}")
        gi = _value(mig["gpu_instance_id"], f"the GPU instance of MIG device {slot}")
        if gi in by_gi:
            raise _Unusable(
                f"GPU instance {gi} holds more than one compute instance; Slicehub "
                "hands out whole GPU instances (one compute instance each)"
            )
        by_gi[gi] = mig
    out = []
    for gi, mig in sorted(by_gi.items()):
        info = _value(dev["gpu_instances"].get(str(gi), {"error": "missing"}), f"GPU instance {gi}")
        placement = catalogue.Placement(info["placement_start"], _profile(model, dev, info))
        out.append(
            inventory.MigInstance(
                placement,
                _value(mig["uuid"], f"the UUID of GPU instance {gi}"),
                _value(mig["memory_total"], f"the memory of GPU instance {gi}"),
            )
        )
    out.sort(key=lambda i: i.placement)
    if not catalogue.layout_is_valid(model, (i.placement for i in out)):
        layout = ", ".join(f"{i.placement.profile}@{i.placement.start}" for i in out)
        raise _Unusable(
            f"MIG layout [{layout}] is not one NVIDIA's placement table allows on an {model.name}"
        )
    return tuple(out)


def _profile(model: catalogue.GpuModel, dev: dict, info: dict) -> str:
    """The catalogue profile of a GPU instance: by the name NVML reports ("MIG 3g.40gb"), or
    without a name (v1 query) by compute slices, memory slices and media extensions. Either
    way the catalogue's slice counts must agree with NVML's."""
    pid, span = info["profile_id"], info["placement_size"]
    found = [
        p for p in dev["gpu_instance_profiles"].values() if not _is_error(p) and p["id"] == pid
    ]
    if len(found) != 1:
        raise _Unusable(f"GPU instance profile id {pid} is not among the profiles NVML lists")
    nv = found[0]
    name = nv.get("name", "").removeprefix("MIG ").strip()
    if name:
        if not model.has_profile(name):
            raise _Unusable(f"MIG profile {name!r} is not in the catalogue for the {model.name}")
        prof = model.profile(name)
    else:
        media = nv["ofa_count"] > 0 and nv["slice_count"] < catalogue.COMPUTE_SLICES
        key = (nv["slice_count"], span, media)
        match = [
            p for p in model.profiles if (p.compute_slices, p.span, p.name.endswith("+me")) == key
        ]
        if len(match) != 1:
            raise _Unusable(
                f"no single catalogue profile of the {model.name} has "
                f"{key[0]} compute slices over {span} memory slices"
            )
        prof = match[0]
    if (prof.compute_slices, prof.span) != (nv["slice_count"], span):
        raise _Unusable(
            f"NVML's {name or pid} has {nv['slice_count']} compute slices over "
            f"{span} memory slices; the catalogue's {prof.name} has "
            f"{prof.compute_slices} over {prof.span}"
        )
    return prof.name


# -- entry points ---------------------------------------------------------------------------


def _host_cpu_ids() -> tuple[int, ...]:
    return tuple(sorted(os.sched_getaffinity(0)))


def _host_memory_bytes() -> int:
    return psutil.virtual_memory().total


def discover(node_name: str, nvml=None) -> inventory.Node | None:
    """This node as NVML sees it (declared=False), or None when NVML is not there."""
    snap = snapshot(nvml)
    if _is_error(snap["init"]):
        return node_from_snapshot(node_name, snap, (), 0)
    return node_from_snapshot(node_name, snap, _host_cpu_ids(), _host_memory_bytes())


def record(path, nvml=None) -> dict:
    """Write what discovery reads (NVML and host) to `path` as JSON, in the format the test
    fixtures in tests/fixtures/nvml replay; returns it."""
    snap = snapshot(nvml)
    snap["host"] = {"cpu_ids": list(_host_cpu_ids()), "memory_total": _host_memory_bytes()}
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    snap["note"] = f"Recorded by `python -m slicehub.spawners.local.nvml record` on {when}."
    with open(path, "w") as f:
        json.dump(snap, f, indent=2)
        f.write("\n")
    return snap


def describe(node: inventory.Node | None) -> str:
    if node is None:
        return "NVML not available: no GPUs discovered (the site file's declared inventory applies)"
    gib = catalogue.GIB
    lines = [f"{node.name}: {node.cpus} CPUs, {node.memory_bytes / gib:.1f} GiB memory"]
    for g in node.gpus:
        lines.append(
            f"  GPU {g.index} {g.model} {g.uuid} {g.memory_bytes / gib:.1f} GiB MIG {g.mig}"
        )
        lines += [
            f"    {i.placement.profile}@{i.placement.start} {i.uuid} {i.memory_bytes / gib:.2f} GiB"
            for i in g.instances
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slicehub.spawners.local.nvml", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write what NVML reports here to a JSON fixture")
    rec.add_argument("path")
    show = sub.add_parser("show", help="print the node discovery finds here")
    show.add_argument("--node", default=socket.gethostname(), help="node name (default: hostname)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "record":
        snap = record(args.path)
        print(f"wrote {args.path}: {len(snap['devices'])} GPU(s), init error: {snap['init']}")
    else:
        print(describe(discover(args.node)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

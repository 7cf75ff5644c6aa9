"""NVML discovery on a real NVIDIA GPU: what `slicehub.spawners.local.nvml.discover` finds must be
consistent.

Skipped (with the reason) where NVML cannot be initialised, i.e. on machines without a GPU.
Read-only like discovery itself: nothing here changes MIG mode, instances or clocks.
"""

from __future__ import annotations

import json
import logging

import pynvml
import pytest

from slicehub.common import catalogue
from slicehub.spawners.local import inventory, nvml

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_count() -> int:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no usable NVIDIA driver here: nvmlInit() failed ({exc})")
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def test_discover_real_gpus(gpu_count, caplog):
    caplog.set_level(logging.WARNING, logger="slicehub.spawners.local.nvml")
    node = nvml.discover("this-node")

    assert node is not None and not node.declared
    assert node.cpus >= 1 and node.memory_bytes > 0
    indices = [g.index for g in node.gpus]
    assert indices == sorted(set(indices)) and all(0 <= i < gpu_count for i in indices)
    skipped = set(range(gpu_count)) - set(indices)
    for index in skipped:  # a GPU left out is left out cleanly, with a reason
        assert any(f"GPU {index} (" in r.getMessage() for r in caplog.records), caplog.text

    for gpu in node.gpus:
        assert not gpu.declared
        assert gpu.uuid.startswith("GPU-")
        model = catalogue.gpu_model(gpu.model)
        assert gpu.memory_bytes > 0
        assert gpu.mig in (inventory.MIG_NONE, inventory.MIG_STATIC)
        if gpu.mig == inventory.MIG_NONE:
            assert gpu.instances == ()
            continue
        placements = [i.placement for i in gpu.instances]
        assert catalogue.layout_is_valid(model, placements)
        assert all(i.uuid.startswith("MIG-") for i in gpu.instances)
        assert len({i.uuid for i in gpu.instances}) == len(gpu.instances)
        assert all(0 < i.memory_bytes <= gpu.memory_bytes for i in gpu.instances)


def test_record_here_replays_to_the_same_node(gpu_count, tmp_path):
    path = tmp_path / "here.json"
    nvml.record(path)
    snap = json.loads(path.read_text())

    assert snap["init"] is None and len(snap["devices"]) == gpu_count
    cpu_ids = tuple(snap["host"]["cpu_ids"])
    replayed = nvml.node_from_snapshot("this-node", snap, cpu_ids, snap["host"]["memory_total"])
    assert replayed == nvml.discover("this-node")

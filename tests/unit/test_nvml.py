"""NVML discovery (slicehub.spawners.local.nvml) on recorded/transcribed NVML answers, through a
fake NVML.

The fixtures in tests/fixtures/nvml are snapshots in the format
`slicehub.spawners.local.nvml.record` writes; FakeNvml answers pynvml's calls from one, so
discover() runs its real NVML code path here.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slicehub.common import catalogue
from slicehub.common.catalogue import Placement
from slicehub.spawners.local import inventory
from slicehub.spawners.local import nvml as nvml_mod
from slicehub.spawners.local.inventory import MIG_NONE, MIG_STATIC, MigInstance

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvml"
MIB = 1024**2
GIB = 1024**3


# -- the fake ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeHandle:
    kind: str  # "gpu", "mig" (a MIG device) or "gi" (a GPU instance)
    gpu: int
    sub: int = -1  # MIG device slot, or GPU instance id


def _fake_call(fn):
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        self.calls.append(fn.__name__)
        if fn.__name__ != "nvmlInit" and self.initialised <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return fn(self, *args, **kwargs)

    return call


def _answer(entry):
    """A recorded value, or raise the recorded NVML error as pynvml's own exception class."""
    if isinstance(entry, dict) and "error" in entry:
        raise pynvml.NVMLError(getattr(pynvml, entry["error"]))
    return entry


def _invalid():
    return pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)


class FakeNvml:
    """A fake pynvml module that replays one snapshot (tests/fixtures/nvml/*.json).

    It implements only the read-only calls slicehub.spawners.local.nvml makes, raises pynvml's real
    exception classes (NVMLError_NotFound for an empty MIG slot, NVMLError_NotSupported for a
    profile the GPU lacks, NVMLError_FunctionNotFound for the v2 profile query on an old driver),
    refuses handles of the wrong kind and calls before nvmlInit, and records every call. Anything
    else (nvmlDeviceSetMigMode, nvmlDeviceCreateGpuInstance, clocks...) is an AttributeError.
    `bytes_strings` answers names and UUIDs as bytes, as pynvml releases before 11.5 did.
    """

    def __init__(self, recording: dict, *, bytes_strings: bool = False):
        self.rec = copy.deepcopy(recording)
        self.bytes_strings = bytes_strings
        self.calls: list[str] = []
        self.initialised = 0

    def _str(self, value: str):
        return value.encode() if self.bytes_strings else value

    def _device(self, handle, kind="gpu") -> dict:
        if not isinstance(handle, FakeHandle) or handle.kind != kind:
            raise _invalid()
        return self.rec["devices"][handle.gpu]

    def _mig(self, handle) -> dict:
        return self._device(handle, "mig")["mig_devices"][handle.sub]

    @_fake_call
    def nvmlInit(self):
        _answer(self.rec["init"])
        self.initialised += 1

    @_fake_call
    def nvmlShutdown(self):
        self.initialised -= 1

    @_fake_call
    def nvmlDeviceGetCount(self):
        return _answer(self.rec.get("device_count", len(self.rec["devices"])))

    @_fake_call
    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.rec["devices"]):
            raise _invalid()
        _answer(self.rec["devices"][index])
        return FakeHandle("gpu", index)

    @_fake_call
    def nvmlDeviceGetName(self, handle):
        return self._str(_answer(self._device(handle)["name"]))

    @_fake_call
    def nvmlDeviceGetUUID(self, handle):
        if isinstance(handle, FakeHandle) and handle.kind == "mig":
            return self._str(_answer(self._mig(handle)["uuid"]))
        return self._str(_answer(self._device(handle)["uuid"]))

    @_fake_call
    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        if isinstance(handle, FakeHandle) and handle.kind == "mig":
            total = _answer(self._mig(handle)["memory_total"])
        else:
            total = _answer(self._device(handle)["memory_total"])
        return SimpleNamespace(total=total, free=total, used=0)

    @_fake_call
    def nvmlDeviceGetMigMode(self, handle):
        return list(_answer(self._device(handle)["mig_mode"]))

    @_fake_call
    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return _answer(
            self._device(handle).get("max_mig_devices", {"error": "NVML_ERROR_NOT_SUPPORTED"})
        )

    @_fake_call
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, index):
        dev = self._device(handle)
        if _answer(dev["mig_mode"])[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
            raise _invalid()
        if not 0 <= index < len(dev["mig_devices"]):
            raise _invalid()
        _answer(dev["mig_devices"][index])
        return FakeHandle("mig", handle.gpu, index)

    @_fake_call
    def nvmlDeviceGetGpuInstanceId(self, handle):
        return _answer(self._mig(handle)["gpu_instance_id"])

    @_fake_call
    def nvmlDeviceGetGpuInstanceById(self, handle, gi_id):
        instances = _answer(self._device(handle)["gpu_instances"])
        _answer(instances.get(str(gi_id), {"error": "NVML_ERROR_NOT_FOUND"}))
        return FakeHandle("gi", handle.gpu, gi_id)

    @_fake_call
    def nvmlGpuInstanceGetInfo(self, handle):
        info = self._device(handle, "gi")["gpu_instances"][str(handle.sub)]
        return SimpleNamespace(
            device=FakeHandle("gpu", handle.gpu),
            id=handle.sub,
            profileId=info["profile_id"],
            placement=SimpleNamespace(start=info["placement_start"], size=info["placement_size"]),
        )

    @_fake_call
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle, profile, version=2):
        dev = self._device(handle)
        if version not in (1, 2) or version > dev.get("profile_info_version", 2):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        entry = dev["gpu_instance_profiles"].get(
            str(profile), {"error": "NVML_ERROR_NOT_SUPPORTED"}
        )
        entry = _answer(entry)
        info = SimpleNamespace(
            id=entry["id"], sliceCount=entry["slice_count"], ofaCount=entry["ofa_count"]
        )
        if version == 2:
            info.name = entry.get("name", "").encode()  # a ctypes char array reads as bytes
        return info

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo


# -- helpers -------------------------------------------------------------------------------


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def host(monkeypatch):
    """Replay a snapshot's host part (CPU affinity and memory) instead of this machine's."""

    def use(snap: dict) -> None:
        monkeypatch.setattr(nvml_mod, "_host_cpu_ids", lambda: tuple(snap["host"]["cpu_ids"]))
        monkeypatch.setattr(nvml_mod, "_host_memory_bytes", lambda: snap["host"]["memory_total"])

    return use


@pytest.fixture
def replay(host):
    """discover() on a snapshot through FakeNvml; returns (node, fake)."""

    def run(snap: dict, node_name: str = "gpu-node-1", **fake_options):
        host(snap)
        fake = FakeNvml(snap, **fake_options)
        return nvml_mod.discover(node_name, nvml=fake), fake

    return run


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


H100_GPU0 = "GPU-0cc319fe-4e5b-5420-9b5e-053dfefc2c98"
H100_GPU1 = "GPU-f24c91a5-7289-588d-8f44-1790e6072f6a"
H100_INSTANCES = (
    MigInstance(Placement(0, "2g.20gb"), "MIG-f0b443ab-9459-50d8-8e4d-c3d6666db5df", 20096 * MIB),
    MigInstance(Placement(2, "1g.10gb"), "MIG-5fa57137-c5a1-5cb9-bcbb-b6f67c47329f", 9984 * MIB),
    MigInstance(Placement(3, "1g.10gb"), "MIG-d3c0c12b-9813-5142-9d3f-565eb3575e45", 9984 * MIB),
    MigInstance(Placement(4, "3g.40gb"), "MIG-c42ab43d-e83e-5f72-af64-89e97a2f5175", 40448 * MIB),
)


# -- discovery on each fixture ---------------------------------------------------------------


def test_h100_mixed_layout_and_a_whole_h100(replay, caplog):
    node, fake = replay(load("h100-mig-mixed"))

    assert node == inventory.Node(
        name="gpu-node-1",
        cpus=32,
        memory_bytes=512 * GIB,
        cpu_ids=tuple(range(32)),
        declared=False,
        gpus=(
            inventory.Gpu(
                node="gpu-node-1",
                index=0,
                uuid=H100_GPU0,
                model="H100-80GB",
                mig=MIG_STATIC,
                instances=H100_INSTANCES,
                declared=False,
                memory_bytes=81559 * MIB,
            ),
            inventory.Gpu(
                node="gpu-node-1",
                index=1,
                uuid=H100_GPU1,
                model="H100-80GB",
                mig=MIG_NONE,
                declared=False,
                memory_bytes=81559 * MIB,
            ),
        ),
    )
    gpu0 = node.gpus[0]
    assert catalogue.layout_is_valid(catalogue.gpu_model("H100-80GB"), gpu0.layout_key[2])
    assert gpu0.mig_uuid(Placement(4, "3g.40gb")) == "MIG-c42ab43d-e83e-5f72-af64-89e97a2f5175"
    assert not inventory.Inventory((node,)).declared
    assert warnings_of(caplog) == []
    assert fake.calls.count("nvmlInit") == fake.calls.count("nvmlShutdown") == 1
    assert fake.calls[-1] == "nvmlShutdown" and fake.initialised == 0
    # Every MIG slot was asked for, the empty ones answering NOT_FOUND.
    assert fake.calls.count("nvmlDeviceGetMigDeviceHandleByIndex") == 7


def test_a100_seven_1g_instances(replay, caplog):
    node, _ = replay(load("a100-80gb-7x1g"), node_name="a100-node")

    assert node.name == "a100-node" and not node.declared
    assert node.cpu_ids == tuple(range(8, 24)) and node.cpus == 16
    (gpu,) = node.gpus
    assert (gpu.uuid, gpu.model, gpu.mig, gpu.declared) == (
        "GPU-e42d392d-fe88-5a3b-9b39-e6d4d3600d38",
        "A100-80GB",
        MIG_STATIC,
        False,
    )
    assert [i.placement for i in gpu.instances] == [Placement(s, "1g.10gb") for s in range(7)]
    assert all(i.memory_bytes == 9728 * MIB for i in gpu.instances)
    # GPU instance 7 sits at slice 0 and 13 at slice 6 (the MIG devices are listed newest first).
    assert gpu.instances[0].uuid == "MIG-6d1065c6-7deb-5c6e-9948-cf2cca9318fa"
    assert gpu.instances[6].uuid == "MIG-66051cf2-194d-599d-92c7-e48e988306a3"
    assert len({i.uuid for i in gpu.instances}) == 7
    assert warnings_of(caplog) == []


def test_unknown_model_is_left_out_with_a_warning(replay, caplog):
    node, _ = replay(load("unknown-gpu"))

    assert [(g.index, g.model, g.uuid) for g in node.gpus] == [
        (1, "H100-80GB", "GPU-06a591e2-33eb-5e1d-9fff-3569aca0181a")
    ]
    (warning,) = warnings_of(caplog)
    assert "GPU 0 (NVIDIA L40S)" in warning and "not in the catalogue" in warning


def test_library_missing_gives_none(replay, caplog):
    caplog.set_level(logging.INFO, logger="slicehub.spawners.local.nvml")
    node, fake = replay(load("no-library"))

    assert node is None
    assert fake.calls == ["nvmlInit"]  # no shutdown without a successful init
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in caplog.text


@pytest.mark.parametrize(
    "error", ["NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_UNKNOWN"]
)
def test_any_init_failure_gives_none(replay, error):
    snap = load("h100-mig-mixed")
    snap["init"] = {"error": error}
    node, fake = replay(snap)
    assert node is None and fake.calls == ["nvmlInit"]


# -- GPUs that cannot be accounted for are left out, never guessed ---------------------------


def only_gpu1_survives(node, caplog, *fragments):
    assert [g.uuid for g in node.gpus] == [H100_GPU1]
    (warning,) = warnings_of(caplog)
    assert warning.startswith("GPU 0 (NVIDIA H100 80GB HBM3) on gpu-node-1 left out")
    for fragment in fragments:
        assert fragment in warning


def test_overlapping_layout_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][0]["gpu_instances"]["10"]["placement_start"] = 1  # on top of 2g.20gb@0
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "1g.10gb@1", "placement table", "H100-80GB")


def test_layout_at_a_position_the_profile_cannot_start_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    gi = snap["devices"][0]["gpu_instances"]["1"]  # the 3g.40gb, starts only at 0 or 4
    gi["placement_start"] = 2
    snap["devices"][0]["gpu_instances"]["3"]["placement_start"] = 6
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "3g.40gb@2", "placement table")


def test_profile_the_catalogue_lacks_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][0]["gpu_instance_profiles"]["2"]["name"] = "MIG 3g.40gb+gfx"
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "'3g.40gb+gfx'", "not in the catalogue")


def test_profile_whose_slices_disagree_with_the_catalogue_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][0]["gpu_instances"]["1"]["placement_size"] = 2  # a "3g.40gb" on 2 slices
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "the catalogue's 3g.40gb has 3 over 4")


def test_profile_id_nvml_does_not_list_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    del snap["devices"][0]["gpu_instance_profiles"]["2"]
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "profile id 9")


def test_two_compute_instances_in_one_gpu_instance_are_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    migs = snap["devices"][0]["mig_devices"]
    migs[4] = {**migs[0], "uuid": "MIG-00000000-0000-5000-8000-000000000004"}
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "more than one compute instance")


def test_gpu_instance_nvml_will_not_show_is_left_out(replay, caplog):
    # Without root, NVML may refuse GPU instance details: say so, do not guess placements.
    snap = load("h100-mig-mixed")
    snap["devices"][0]["gpu_instances"]["9"] = {"error": "NVML_ERROR_NO_PERMISSION"}
    node, fake = replay(snap)
    only_gpu1_survives(node, caplog, "GPU instance 9", "NVML_ERROR_NO_PERMISSION")
    assert "nvmlDeviceGetGpuInstanceById" in fake.calls


def test_mig_slot_nvml_refuses_is_left_out(replay, caplog):
    # NOT_FOUND is an empty slot; any other refusal hides an instance we cannot account for.
    snap = load("h100-mig-mixed")
    snap["devices"][0]["mig_devices"][5] = {"error": "NVML_ERROR_UNKNOWN"}
    node, _ = replay(snap)
    only_gpu1_survives(node, caplog, "MIG device 5", "NVML_ERROR_UNKNOWN")


def test_mig_slot_count_nvml_refuses_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][0]["max_mig_devices"] = {"error": "NVML_ERROR_NO_PERMISSION"}
    node, fake = replay(snap)
    only_gpu1_survives(node, caplog, "MIG device slots", "NVML_ERROR_NO_PERMISSION")
    assert "nvmlDeviceGetMigDeviceHandleByIndex" not in fake.calls


def test_gpu_nvml_cannot_open_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][0] = {"error": "NVML_ERROR_GPU_IS_LOST"}
    node, _ = replay(snap)
    assert [g.uuid for g in node.gpus] == [H100_GPU1]
    assert "NVML_ERROR_GPU_IS_LOST" in warnings_of(caplog)[0]


# -- MIG modes -------------------------------------------------------------------------------


def test_mig_not_supported_means_whole_gpu(replay):
    snap = load("h100-mig-mixed")
    snap["devices"][1]["mig_mode"] = {"error": "NVML_ERROR_NOT_SUPPORTED"}
    node, _ = replay(snap)
    assert (node.gpus[1].mig, node.gpus[1].instances) == (MIG_NONE, ())


def test_pending_mig_mode_uses_the_current_one_and_says_so(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][1]["mig_mode"] = [0, 1]
    node, _ = replay(snap)
    assert node.gpus[1].mig == MIG_NONE
    assert "pending" in warnings_of(caplog)[0]


def test_mig_mode_other_error_is_left_out(replay, caplog):
    snap = load("h100-mig-mixed")
    snap["devices"][1]["mig_mode"] = {"error": "NVML_ERROR_UNKNOWN"}
    node, _ = replay(snap)
    assert [g.index for g in node.gpus] == [0]
    assert "NVML_ERROR_UNKNOWN" in warnings_of(caplog)[0]


def test_mig_mode_without_instances_is_static_and_empty(replay, caplog):
    snap = load("h100-mig-mixed")
    dev = snap["devices"][0]
    dev["mig_devices"] = [{"error": "NVML_ERROR_NOT_FOUND"}] * 7
    dev["gpu_instances"] = {}
    node, _ = replay(snap)
    assert (node.gpus[0].mig, node.gpus[0].instances) == (MIG_STATIC, ())
    assert "no MIG instances" in warnings_of(caplog)[0]


# -- what NVML versions answer ---------------------------------------------------------------


def test_v1_profile_query_gives_the_same_node(replay):
    named, _ = replay(load("h100-mig-mixed"))
    snap = load("h100-mig-mixed")
    dev = snap["devices"][0]
    dev["profile_info_version"] = 1
    for entry in dev["gpu_instance_profiles"].values():
        del entry["name"]
    unnamed, _ = replay(snap)
    assert unnamed == named


def test_v1_profile_query_tells_plus_me_from_plain_1g(replay):
    snap = load("h100-mig-mixed")
    dev = snap["devices"][0]
    dev["profile_info_version"] = 1
    for entry in dev["gpu_instance_profiles"].values():
        del entry["name"]
    dev["gpu_instances"]["10"]["profile_id"] = 20  # the 1g.10gb at 3 becomes 1g.10gb+me
    node, _ = replay(snap)
    assert [i.placement for i in node.gpus[0].instances] == [
        Placement(0, "2g.20gb"),
        Placement(2, "1g.10gb"),
        Placement(3, "1g.10gb+me"),
        Placement(4, "3g.40gb"),
    ]


def test_bytes_from_older_pynvml_are_decoded(replay):
    as_str, _ = replay(load("h100-mig-mixed"))
    as_bytes, _ = replay(load("h100-mig-mixed"), bytes_strings=True)
    assert as_bytes == as_str
    assert isinstance(as_bytes.gpus[0].uuid, str)


# -- read-only, and shutdown ---------------------------------------------------------------


def test_discovery_source_calls_nothing_that_changes_a_gpu():
    source = Path(nvml_mod.__file__).read_text()
    calls = set(re.findall(r"nvml\.(nvml\w+)", source))
    assert calls, "found no NVML calls: the pattern is stale"
    changing = [c for c in calls if re.search(r"Set|Create|Destroy|Reset|Clear|Clock", c)]
    assert changing == []
    missing = sorted(c for c in calls if not hasattr(FakeNvml, c))
    assert missing == [], "the fake must implement every NVML call discovery makes"
    assert all(hasattr(pynvml, c) for c in calls)


def test_shutdown_runs_when_reading_fails(host):
    snap = load("h100-mig-mixed")
    snap["device_count"] = {"error": "NVML_ERROR_UNKNOWN"}
    host(snap)
    fake = FakeNvml(snap)
    with pytest.raises(pynvml.NVMLError_Unknown):
        nvml_mod.discover("n", nvml=fake)
    assert fake.calls[-1] == "nvmlShutdown" and fake.initialised == 0


# -- record ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["h100-mig-mixed", "a100-80gb-7x1g", "unknown-gpu", "no-library"])
def test_record_round_trips_through_the_fake(name, host, tmp_path):
    fixture = load(name)
    host(fixture)
    out = tmp_path / "recorded.json"

    nvml_mod.record(out, nvml=FakeNvml(fixture))

    recorded = json.loads(out.read_text())
    assert recorded["note"].startswith(
        "Recorded by `python -m slicehub.spawners.local.nvml record`"
    )
    assert {k: v for k, v in recorded.items() if k != "note"} == {
        k: v for k, v in fixture.items() if k != "note"
    }
    again = nvml_mod.discover("n", nvml=FakeNvml(recorded))
    assert again == nvml_mod.discover("n", nvml=FakeNvml(fixture))


def test_record_of_an_old_driver_round_trips(host, tmp_path):
    snap = load("a100-80gb-7x1g")
    snap["devices"][0]["profile_info_version"] = 1
    for entry in snap["devices"][0]["gpu_instance_profiles"].values():
        del entry["name"]
    host(snap)
    recorded = nvml_mod.record(tmp_path / "old.json", nvml=FakeNvml(snap))
    assert recorded["devices"] == snap["devices"]


def test_cli_record_and_show(monkeypatch, host, tmp_path, capsys):
    fixture = load("h100-mig-mixed")
    host(fixture)
    real_record, real_discover = nvml_mod.record, nvml_mod.discover
    monkeypatch.setattr(nvml_mod, "record", lambda p: real_record(p, nvml=FakeNvml(fixture)))
    monkeypatch.setattr(nvml_mod, "discover", lambda n: real_discover(n, nvml=FakeNvml(fixture)))

    assert nvml_mod.main(["record", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["devices"] == fixture["devices"]
    assert nvml_mod.main(["show", "--node", "gpu-node-1"]) == 0
    shown = capsys.readouterr().out
    assert f"GPU 0 H100-80GB {H100_GPU0}" in shown
    assert "3g.40gb@4 MIG-c42ab43d-e83e-5f72-af64-89e97a2f5175 39.50 GiB" in shown
    assert nvml_mod.describe(None).startswith("NVML not available")


# -- every layout the catalogue allows is discovered as itself; others are refused ----------


def _snapshot_with(placements) -> dict:
    snap = load("h100-mig-mixed")
    dev = snap["devices"][0]
    ids = {p["name"].removeprefix("MIG "): p["id"] for p in dev["gpu_instance_profiles"].values()}
    dev["mig_devices"] = [
        {
            "uuid": f"MIG-{n:08d}-0000-5000-8000-000000000000",
            "gpu_instance_id": 100 + n,
            "memory_total": GIB,
        }
        for n in range(len(placements))
    ] + [{"error": "NVML_ERROR_NOT_FOUND"}] * (7 - len(placements))
    dev["gpu_instances"] = {
        str(100 + n): {
            "profile_id": ids[p.profile],
            "placement_start": p.start,
            "placement_size": catalogue.gpu_model("H100-80GB").profile(p.profile).span,
        }
        for n, p in enumerate(placements)
    }
    return snap


H100 = catalogue.gpu_model("H100-80GB")
ALL_PLACEMENTS = [Placement(s, p.name) for p in H100.profiles for s in p.starts]


@given(st.lists(st.sampled_from(ALL_PLACEMENTS), max_size=7, unique=True))
def test_discovered_layout_is_exactly_a_valid_one(placements):
    node = nvml_mod.node_from_snapshot("n", _snapshot_with(placements), (0,), GIB)
    gpu0 = [g for g in node.gpus if g.index == 0]
    if catalogue.layout_is_valid(H100, placements):
        assert [i.placement for i in gpu0[0].instances] == sorted(placements)
    else:
        assert gpu0 == []

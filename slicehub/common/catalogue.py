"""The slice catalogue: GPU models, their MIG profiles and NVIDIA's placement rules.

This module decides what a GPU model *can* be cut into and where each cut may sit. It knows nothing
about a particular site (prices, CPUs, which types are offered: see `slicehub.spawners.site`) or
about who holds what (see `slicehub.spawners.local.allocator`).

Placement follows NVIDIA's MIG user guide ("Supported MIG Profiles"), as `nvidia-smi mig -lgipp`
prints it: a GPU has 8 memory slices numbered 0..7; a profile may start only at the listed
positions and then covers `span` consecutive slices. Two instances may not overlap. That table,
not a sum of sizes, is what makes 4g.40gb + 3g.40gb fit while 3g.40gb + 3g.40gb strands a
compute slice, and what stops a 1g instance from starting on slice 7.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

GIB = 1024**3

MEMORY_SLOTS = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True)
class MigProfile:
    """One MIG profile of one GPU model, e.g. 3g.40gb on an H100 80GB."""

    name: str  # as NVIDIA names it: "3g.40gb", "1g.10gb+me"
    compute_slices: int
    span: int  # memory slices covered, out of MEMORY_SLOTS
    starts: tuple[int, ...]  # memory-slice positions where an instance may start
    max_instances: int
    memory_bytes: int  # nominal; NVML's figure replaces it where a GPU is discovered

    def slots(self, start: int) -> frozenset[int]:
        return frozenset(range(start, start + self.span))


@dataclass(frozen=True)
class GpuModel:
    """A GPU model as the catalogue knows it: name, memory, and its MIG profiles."""

    name: str  # "H100-80GB"
    short: str  # "h100": the prefix of slice type names
    memory_bytes: int
    profiles: tuple[MigProfile, ...]
    nvml_names: tuple[str, ...]  # what nvmlDeviceGetName returns for this model

    def profile(self, name: str) -> MigProfile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.profiles)
        raise KeyError(f"{self.name} has no MIG profile {name!r} (it has: {known})")

    def has_profile(self, name: str) -> bool:
        return any(p.name == name for p in self.profiles)


def _profiles(mem_1g: int, mem_1g_wide: int, mem_3g: int, mem_full: int) -> tuple[MigProfile, ...]:
    """The A100/H100/H200 family share one placement table; only memory sizes differ."""
    g = GIB
    return (
        MigProfile(f"1g.{mem_1g}gb", 1, 1, (0, 1, 2, 3, 4, 5, 6), 7, mem_1g * g),
        MigProfile(f"1g.{mem_1g}gb+me", 1, 1, (0, 1, 2, 3, 4, 5, 6), 1, mem_1g * g),
        MigProfile(f"1g.{mem_1g_wide}gb", 1, 2, (0, 2, 4, 6), 4, mem_1g_wide * g),
        MigProfile(f"2g.{mem_1g_wide}gb", 2, 2, (0, 2, 4), 3, mem_1g_wide * g),
        MigProfile(f"3g.{mem_3g}gb", 3, 4, (0, 4), 2, mem_3g * g),
        MigProfile(f"4g.{mem_3g}gb", 4, 4, (0,), 1, mem_3g * g),
        MigProfile(f"7g.{mem_full}gb", 7, 8, (0,), 1, mem_full * g),
    )


GPU_MODELS: dict[str, GpuModel] = {
    m.name: m
    for m in (
        GpuModel(
            "H100-80GB",
            "h100",
            80 * GIB,
            _profiles(10, 20, 40, 80),
            ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100"),
        ),
        GpuModel(
            "H200-141GB",
            "h200",
            141 * GIB,
            _profiles(18, 35, 71, 141),
            ("NVIDIA H200", "NVIDIA H200 NVL"),
        ),
        GpuModel(
            "A100-80GB",
            "a100",
            80 * GIB,
            _profiles(10, 20, 40, 80),
            ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"),
        ),
    )
}


def gpu_model(name: str) -> GpuModel:
    try:
        return GPU_MODELS[name]
    except KeyError:
        known = ", ".join(GPU_MODELS)
        raise KeyError(f"unknown GPU model {name!r} (known: {known})") from None


def model_for_nvml_name(nvml_name: str) -> GpuModel | None:
    """Map the name NVML reports to a catalogue model, or None when we do not know it."""
    for model in GPU_MODELS.values():
        if nvml_name in model.nvml_names:
            return model
    return None


# -- slice types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceShape:
    """What a slice type is in hardware terms; the site adds CPUs, memory and a price.

    kind is "mig" (one MIG instance), "gpu" (count whole GPUs on one node) or "cpu".
    """

    name: str  # "h100.3g.40gb", "h100x4", "cpu"
    kind: str
    model: str | None = None  # GpuModel.name
    profile: str | None = None  # MIG profile name, for kind == "mig"
    count: int = 0  # whole GPUs, for kind == "gpu"

    @property
    def gpu_memory_bytes(self) -> int:
        if self.kind == "mig":
            return gpu_model(self.model).profile(self.profile).memory_bytes
        if self.kind == "gpu":
            return gpu_model(self.model).memory_bytes * self.count
        return 0

    @property
    def gpu_equivalents(self) -> float:
        """How much of one GPU this is, in sevenths for MIG (for capacity reports)."""
        if self.kind == "mig":
            return gpu_model(self.model).profile(self.profile).compute_slices / COMPUTE_SLICES
        return float(self.count)

    def describe(self) -> str:
        if self.kind == "mig":
            return f"{self.profile} MIG slice of an {self.model}"
        if self.kind == "gpu":
            noun = "GPU" if self.count == 1 else "GPUs"
            return f"{self.count} whole {self.model} {noun}"
        return "CPU only (no GPU)"


MAX_WHOLE_GPUS = 8


def parse_slice_type(name: str) -> SliceShape:
    """Turn a slice type name into its shape, or raise ValueError saying what is wrong.

    Names: "cpu"; "<model>.<profile>" such as "h100.3g.40gb"; "<model>x<n>" such as "h100x4".
    """
    if name == "cpu":
        return SliceShape("cpu", "cpu")
    for model in GPU_MODELS.values():
        prefix = model.short
        if name.startswith(prefix + "."):
            profile = name[len(prefix) + 1 :]
            if not model.has_profile(profile):
                known = ", ".join(p.name for p in model.profiles)
                raise ValueError(
                    f"{profile!r} is not a MIG profile of the {model.name} (profiles: {known})"
                )
            return SliceShape(name, "mig", model.name, profile)
        if name.startswith(prefix + "x"):
            digits = name[len(prefix) + 1 :]
            if (
                digits.isdigit()
                and digits == str(int(digits))
                and 1 <= int(digits) <= MAX_WHOLE_GPUS
            ):
                return SliceShape(name, "gpu", model.name, count=int(digits))
            raise ValueError(
                f"{name!r}: a whole-GPU slice type is {prefix}x<N>, N from 1 to {MAX_WHOLE_GPUS}"
            )
    raise ValueError(
        f"{name!r} is not a slice type name: use 'cpu', '<model>.<mig profile>' "
        f"(e.g. h100.3g.40gb) or '<model>x<N>' (e.g. h100x1); models: "
        + ", ".join(m.short for m in GPU_MODELS.values())
    )


# -- placement -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Placement:
    """One MIG instance position on a GPU: a profile starting at a memory slice."""

    start: int
    profile: str

    def slots(self, model: GpuModel) -> frozenset[int]:
        return model.profile(self.profile).slots(self.start)


def layout_is_valid(model: GpuModel, placements: Iterable[Placement]) -> bool:
    """True when the placements may all exist at once on one GPU of `model`."""
    used: set[int] = set()
    counts: dict[str, int] = {}
    compute = 0
    for p in placements:
        if not model.has_profile(p.profile):
            return False
        prof = model.profile(p.profile)
        if p.start not in prof.starts:
            return False
        slots = prof.slots(p.start)
        if used & slots:
            return False
        used |= slots
        counts[p.profile] = counts.get(p.profile, 0) + 1
        if counts[p.profile] > prof.max_instances:
            return False
        compute += prof.compute_slices
    return compute <= COMPUTE_SLICES


def solve_layout(model: GpuModel, profiles: Sequence[str]) -> tuple[Placement, ...] | None:
    """Find start positions for a list of profiles on one GPU, or None if they cannot coexist.

    A site file may list a static layout without positions ("3g.40gb", "2g.20gb", "1g.10gb",
    "1g.10gb"); whether it fits depends on where each goes (3g at 4, 2g at 0, 1g at 2 and 3
    fits; 3g at 0 first would not leave room), so search. Larger profiles are placed first and
    the search space is tiny (at most 7 instances, at most 7 starts each).
    """
    for name in profiles:
        if not model.has_profile(name):
            return None
    order = sorted(profiles, key=lambda n: -model.profile(n).span)

    def place(i: int, used: frozenset[int], acc: tuple[Placement, ...]):
        if i == len(order):
            return acc
        prof = model.profile(order[i])
        for start in prof.starts:
            slots = prof.slots(start)
            if used & slots:
                continue
            found = place(i + 1, used | slots, (*acc, Placement(start, prof.name)))
            if found is not None:
                return found
        return None

    found = place(0, frozenset(), ())
    if found is None or not layout_is_valid(model, found):
        return None
    return tuple(sorted(found))


@cache
def candidate_placements(model_name: str, profile: str) -> tuple[Placement, ...]:
    """Every position a profile may take on an empty GPU of this model."""
    prof = gpu_model(model_name).profile(profile)
    return tuple(Placement(s, profile) for s in prof.starts)


@cache
def maximal_fits(model_name: str, existing: frozenset[Placement]) -> dict[str, int]:
    """For a GPU holding `existing` instances, how many more instances of each profile could
    still be created (each profile counted alone). The allocator's fragmentation score is
    built on it. Greedy over ascending starts is exact here: positions are aligned."""
    model = gpu_model(model_name)
    out: dict[str, int] = {}
    for prof in model.profiles:
        layout = set(existing)
        n = 0
        for start in prof.starts:
            trial = Placement(start, prof.name)
            if layout_is_valid(model, (*layout, trial)):
                layout.add(trial)
                n += 1
        out[prof.name] = n
    return out


@cache
def placements_that_fit(model_name: str, existing: frozenset[Placement], profile: str):
    """The positions where one more `profile` instance may go next to `existing`."""
    model = gpu_model(model_name)
    return tuple(
        p
        for p in candidate_placements(model_name, profile)
        if layout_is_valid(model, (*existing, p))
    )

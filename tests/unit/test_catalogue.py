"""NVIDIA's placement rules as the catalogue encodes them, and slice type names."""

import pytest

from slicehub.common.catalogue import (
    Placement,
    gpu_model,
    layout_is_valid,
    maximal_fits,
    parse_slice_type,
    placements_that_fit,
    solve_layout,
)

H100 = gpu_model("H100-80GB")


def test_4g_plus_3g_fits_and_uses_every_compute_slice():
    layout = solve_layout(H100, ["4g.40gb", "3g.40gb"])
    assert layout == (Placement(0, "4g.40gb"), Placement(4, "3g.40gb"))


def test_3g_plus_3g_fits_but_strands_a_compute_slice():
    assert solve_layout(H100, ["3g.40gb", "3g.40gb"]) is not None
    # the seventh compute slice cannot be used by anything: all 8 memory slices are taken
    assert solve_layout(H100, ["3g.40gb", "3g.40gb", "1g.10gb"]) is None


def test_layout_found_only_with_the_right_starts():
    # 3g must go at 4; placed at 0 first, 2g + 1g + 1g would need slice 7, where no 1g may start
    layout = solve_layout(H100, ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"])
    assert Placement(4, "3g.40gb") in layout
    assert layout_is_valid(H100, layout)


@pytest.mark.parametrize(
    "layout",
    [
        [Placement(7, "1g.10gb")],  # 1g may not start on memory slice 7
        [Placement(2, "3g.40gb")],  # 3g starts at 0 or 4 only
        [Placement(0, "4g.40gb"), Placement(2, "1g.10gb")],  # overlap
        [Placement(0, "7g.80gb"), Placement(0, "1g.10gb")],
        [Placement(0, "1g.10gb+me"), Placement(1, "1g.10gb+me")],  # at most one +me
    ],
)
def test_forbidden_layouts(layout):
    assert not layout_is_valid(H100, layout)


def test_seven_1g_is_the_maximum():
    assert solve_layout(H100, ["1g.10gb"] * 7) is not None
    assert solve_layout(H100, ["1g.10gb"] * 8) is None


def test_maximal_fits_on_empty_and_cut_gpu():
    empty = maximal_fits("H100-80GB", frozenset())
    assert empty["1g.10gb"] == 7 and empty["3g.40gb"] == 2 and empty["7g.80gb"] == 1
    cut = maximal_fits("H100-80GB", frozenset({Placement(6, "1g.10gb")}))
    assert cut["7g.80gb"] == 0 and cut["4g.40gb"] == 1 and cut["3g.40gb"] == 1


def test_placements_that_fit_respect_existing():
    fits = placements_that_fit("H100-80GB", frozenset({Placement(0, "4g.40gb")}), "1g.10gb")
    assert [p.start for p in fits] == [4, 5, 6]


@pytest.mark.parametrize("model", ["H100-80GB", "H200-141GB", "A100-80GB"])
def test_every_model_has_the_standard_profiles(model):
    m = gpu_model(model)
    assert [p.max_instances for p in m.profiles] == [7, 1, 4, 3, 2, 1, 1]


def test_slice_type_names():
    assert parse_slice_type("cpu").kind == "cpu"
    s = parse_slice_type("h200.3g.71gb")
    assert (s.kind, s.model, s.profile) == ("mig", "H200-141GB", "3g.71gb")
    s = parse_slice_type("a100x4")
    assert (s.kind, s.count, s.gpu_memory_bytes) == ("gpu", 4, 4 * 80 * 1024**3)


@pytest.mark.parametrize(
    "name", ["h100.3g.41gb", "h100x0", "h100x9", "h100x01", "v100x1", "", "h100.3g.40gb;ls"]
)
def test_bad_slice_type_names(name):
    with pytest.raises(ValueError):
        parse_slice_type(name)

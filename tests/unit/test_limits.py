"""CPU pinning decisions for local servers."""

from slicehub.spawners.local.limits import pin_cpus


def test_declared_ids_that_exist_are_used_as_they_are():
    assert pin_cpus((2, 3), {0, 1, 2, 3}) == {2, 3}


def test_a_declared_node_bigger_than_the_machine_folds_onto_real_cpus():
    assert pin_cpus((8, 9), {0, 1}) == {0, 1}
    assert pin_cpus((0, 1, 2, 3), {0, 1}) == {0, 1}
    # two slices on a 4-CPU machine still land on different cores when they can
    assert pin_cpus((4, 5), {0, 1, 2, 3}).isdisjoint(pin_cpus((2, 3), {0, 1, 2, 3}))


def test_no_declared_ids_means_no_restriction():
    assert pin_cpus((), {0, 1}) == {0, 1}

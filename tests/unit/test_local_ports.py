"""A local server's port is one no port-0 bind (a kernel's ZMQ sockets, Dask) can be handed
before the server binds it: below the OS's ephemeral range, free, and not given to another
server of this hub (slicehub.spawners.local.ports)."""

from __future__ import annotations

import random
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from slicehub.spawners.local import ports


def range_file(tmp_path, low: int, high: int = 60999):
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")
    return path


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), taken=st.sets(st.integers(20000, 32767), max_size=200))
def test_the_port_is_below_the_ephemeral_range_and_never_one_given(tmp_path_factory, seed, taken):
    path = range_file(tmp_path_factory.mktemp("r"), 32768)
    port = ports.server_port("127.0.0.1", taken, random.Random(seed), path)
    assert ports.LOWEST <= port < 32768 and port not in taken


def test_a_port_in_use_is_skipped(tmp_path):
    path = range_file(tmp_path, 32768)
    used = ports.server_port("127.0.0.1", (), random.Random(1), path)

    class BusyFirst(random.Random):  # offers the busy port first, then others
        offered = False

        def randrange(self, a, b):
            if not self.offered:
                self.offered = True
                return used
            return super().randrange(a, b)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", used))
        busy.listen()
        port = ports.server_port("127.0.0.1", (), BusyFirst(7), path)
    assert port != used and ports.LOWEST <= port < 32768


def test_no_room_below_the_range_takes_the_stock_choice(tmp_path):
    path = range_file(tmp_path, ports.LOWEST + 10)  # a site that widened its ephemeral range
    port = ports.server_port("127.0.0.1", (), random.Random(3), path)
    assert port >= ports.LOWEST + 10 or port < ports.LOWEST  # random_port(): the OS's choice


def test_an_unreadable_range_is_linuxs_default(tmp_path):
    assert ports.ephemeral_range(tmp_path / "absent") == (32768, 60999)
    (tmp_path / "bad").write_text("many\n")
    assert ports.ephemeral_range(tmp_path / "bad") == (32768, 60999)
    assert ports.ephemeral_range(range_file(tmp_path, 40000, 50000)) == (40000, 50000)

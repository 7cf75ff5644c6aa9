"""What SlicehubProxy decides about a proxy left by a crashed hub, without a hub: which process
is a configurable-http-proxy, which ports are ours, which leftover proxies are this
deployment's to stop, how they are stopped, and that a pid file naming a pid now given to
another program stops nothing. tests/integration/test_crash.py runs it in a hub."""

import subprocess
import sys
import time

import psutil
import pytest

from slicehub.proxy import (
    ProxyProcess,
    SlicehubProxy,
    is_proxy_command,
    leftover_proxies,
    stop_processes,
    tcp_ports,
)


@pytest.mark.parametrize(
    "cmdline",
    [
        ["node", "/srv/node_modules/.bin/configurable-http-proxy", "--port", "8000"],
        [
            "/usr/bin/nodejs",
            "/usr/lib/node_modules/configurable-http-proxy/bin/configurable-http-proxy",
        ],
        ["node", "--max-old-space-size=256", "/usr/local/bin/configurable-http-proxy"],
        ["/usr/local/bin/configurable-http-proxy", "--api-port", "8001"],
    ],
)
def test_the_proxy_is_known_by_its_program_or_its_script(cmdline):
    assert is_proxy_command(cmdline)


@pytest.mark.parametrize(
    "cmdline",
    [
        [],
        ["grep", "configurable-http-proxy"],
        ["vim", "/srv/node_modules/.bin/configurable-http-proxy"],
        ["node", "/srv/app/server.js", "configurable-http-proxy"],
        ["python", "/srv/configurable-http-proxy"],
    ],
)
def test_a_process_that_only_names_the_proxy_is_not_it(cmdline):
    assert not is_proxy_command(cmdline)


def test_our_ports_are_those_of_the_public_and_the_api_url():
    assert tcp_ports("http://127.0.0.1:8000/", "http://127.0.0.1:8001") == {8000, 8001}
    assert tcp_ports("https://hub.example.org/", "http://10.0.0.1/") == {443, 80}
    assert tcp_ports("http+unix://%2Frun%2Fproxy.sock") == frozenset()


def test_only_this_deployments_proxies_on_our_ports_are_stopped():
    ours = frozenset({8000, 8001})
    on_api = ProxyProcess(11, frozenset({8001}), "t0ken")
    on_public = ProxyProcess(12, frozenset({8000, 9999}), "t0ken")
    elsewhere = ProxyProcess(13, frozenset({18000, 18001}), "t0ken")
    foreign = ProxyProcess(14, frozenset({8000}), "another")
    tokenless = ProxyProcess(15, frozenset({8001}), None)
    stop, leave = leftover_proxies(
        [on_api, on_public, elsewhere, foreign, tokenless], ours, "t0ken"
    )
    assert stop == [on_api, on_public]
    assert leave == [foreign, tokenless]
    # a hub without a token owns nothing
    assert leftover_proxies([tokenless], ours, "") == ([], [tokenless])


def test_stop_sends_sigterm_then_sigkill_to_what_ignores_it():
    polite = subprocess.Popen(["sleep", "60"])
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stubborn.stdout.readline() == "ready\n"
        started = time.monotonic()
        stop_processes([psutil.Process(polite.pid), psutil.Process(stubborn.pid)], grace=0.5)
        assert time.monotonic() - started < 5
        assert polite.wait(5) == -15  # SIGTERM
        assert stubborn.wait(5) == -9  # SIGKILL after the grace
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait()
        stubborn.stdout.close()


def test_a_pid_file_naming_another_program_stops_nothing(tmp_path):
    """After a crash the proxy's pid may belong to another program: JupyterHub's check of the
    pid file must take it for a proxy that is gone, not stop it."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "proxy.pid"
        pid_file.write_text(str(other.pid))
        proxy = SlicehubProxy(
            pid_file=str(pid_file),
            public_url="http://127.0.0.1:8000/",
            api_url="http://127.0.0.1:8001",
            auth_token="t0ken",
        )
        with pytest.raises(ProcessLookupError):
            proxy._check_pid(other.pid)
        proxy._check_previous_process()
        assert other.poll() is None  # still running
        assert not pid_file.exists()  # and the stale pid file is gone
    finally:
        other.kill()
        other.wait()

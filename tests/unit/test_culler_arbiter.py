"""Slicehub's cull_arbiter_hook (slicehub.culler.arbiter), with the server and the quota service
answered in-process: it stops a server only after the quota service said park, the server's
tabs were asked to save, and the session was released as parked; anything it cannot know keeps
the server. The whole path over HTTP is tests/browser/test_parking.py's."""

from datetime import timedelta

from tornado import web

from slicehub.common.quota_client import QuotaClient
from slicehub.culler.arbiter import Arbiter

SERVER = {"full_name": "ann/nb", "url": "/user/ann/nb/", "name": "nb"}


class FakeQuota(QuotaClient):
    def __init__(self, action="keep", park_refusal=None, down=False):
        super().__init__("http://quota.invalid/", "t", 1)
        self.action, self.park_refusal, self.down = action, park_refusal, down
        self.calls: list[tuple] = []

    async def observe(self, session_id, user, server_name, reading):
        self.calls.append(("observe", session_id, user, server_name, reading["idle_seconds"]))
        if self.down:
            raise web.HTTPError(503, "down")
        return {"action": self.action, "idle_seconds": reading["idle_seconds"]}

    async def park(self, session_id, user, server_name):
        self.calls.append(("park", session_id, user, server_name))
        if self.park_refusal:
            raise web.HTTPError(409, self.park_refusal)
        return {"idle_seconds": 1800, "charged_list_cents": 500, "returned_subsidy_cents": 2450}


class FakeArbiter(Arbiter):
    def __init__(self, quota, reading):
        super().__init__("http://127.0.0.1:8000", "culler-token", quota, save_wait=5)
        self.reading = reading
        self.requests: list[tuple] = []

    async def request(self, method, url, body=None, timeout=10.0):
        self.requests.append((method, url, body))
        if url.endswith("/slicehub/api/activity"):
            return self.reading
        return {"front_ends": 1, "saved": 1}


READING = {"session": 7, "idle_seconds": 1800, "busy": [], "gpu": {"signal": "none"}}


async def judge(arbiter) -> bool:
    return await arbiter(inactive=timedelta(0), inactive_limit=60, server=SERVER)


async def test_park_means_save_then_release_then_stop():
    quota = FakeQuota("park")
    arbiter = FakeArbiter(quota, READING)
    assert await judge(arbiter) is True
    assert quota.calls == [("observe", 7, "ann", "nb", 1800), ("park", 7, "ann", "nb")]
    assert arbiter.requests == [
        ("GET", "http://127.0.0.1:8000/user/ann/nb/slicehub/api/activity", None),
        ("POST", "http://127.0.0.1:8000/user/ann/nb/slicehub/api/park", {"wait_seconds": 5}),
    ]


async def test_keep_and_warn_stop_nothing():
    for action in ("keep", "warn"):
        quota = FakeQuota(action)
        arbiter = FakeArbiter(quota, READING)
        assert await judge(arbiter) is False
        assert [c[0] for c in quota.calls] == ["observe"] and len(arbiter.requests) == 1


async def test_what_it_cannot_know_keeps_the_server():
    # the server does not answer; it has no Slicehub session; the quota service is down
    for reading, quota in (
        (None, FakeQuota("park")),
        ({**READING, "session": None}, FakeQuota("park")),
        ({**READING, "session": True}, FakeQuota("park")),
        (READING, FakeQuota("park", down=True)),
    ):
        assert await judge(FakeArbiter(quota, reading)) is False
        assert not [c for c in quota.calls if c[0] == "park"]


async def test_activity_during_the_save_withdraws_the_parking():
    quota = FakeQuota("park", park_refusal="Session 7 is not waiting to be parked")
    assert await judge(FakeArbiter(quota, READING)) is False

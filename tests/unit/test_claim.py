"""A pre-warmed class server's claim (slicehub.extensions.claim), against a fake of the quota
client's one call (`FakeQuota.claim`, named as a fake: the real call is exercised on a real hub
in tests/integration/test_prewarm_hub.py). Only the owner's answered requests claim; a class
that has not started is waited for; a refusal is kept; a quota service away is asked again."""

import asyncio

from tornado import web

from slicehub.extensions.claim import CLAIMED, NONE, REFUSED, WAITING, Claim, watch_requests


class FakeQuota:
    """Answers `claim` from `answers` in turn (a dict, or an HTTPError to raise)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = 0

    async def claim(self, session_id):
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Request:
    """What the Jupyter server's log_function is given: a handler, its status, its user."""

    def __init__(self, user: str | None, status: int = 200):
        self.current_user = None if user is None else type("U", (), {"username": user})()
        self.status = status

    def get_status(self):
        return self.status


async def settle(claim: Claim) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if claim._task is None:
            return


async def test_only_the_owners_answered_request_claims():
    quota = FakeQuota({"id": 9})
    claim = Claim("stu1", 4, quota, prewarmed=True, retry=0.01)
    for other in (Request("culler"), Request(None), Request("stu1", 403), Request("stu2")):
        claim.saw(other)
    await settle(claim)
    assert quota.asked == 0 and claim.state == WAITING
    claim.saw(Request("stu1"))
    claim.saw(Request("stu1"))  # one claim in flight at a time
    await settle(claim)
    assert (claim.state, claim.session, quota.asked) == (CLAIMED, {"id": 9}, 1)
    claim.saw(Request("stu1"))
    await settle(claim)
    assert quota.asked == 1


async def test_a_claim_before_the_class_waits_for_it_and_a_refusal_is_kept():
    early = web.HTTPError(425, "Your class starts at 09:00 UTC; the server is yours then.")
    quota = FakeQuota(early, early, {"id": 9})
    claim = Claim("stu1", 4, quota, prewarmed=True, retry=0.01)
    claim.saw(Request("stu1"))
    await settle(claim)
    assert (claim.state, quota.asked) == (CLAIMED, 3)
    refused = Claim("stu1", 4, FakeQuota(web.HTTPError(402, "stu1 has HK$0.00 left")), True)
    refused.saw(Request("stu1"))
    await settle(refused)
    assert refused.view() == {"state": REFUSED, "message": "stu1 has HK$0.00 left"}


async def test_a_quota_service_away_is_asked_again_at_a_later_request():
    quota = FakeQuota(web.HTTPError(503, "down"), {"id": 9})
    claim = Claim("stu1", 4, quota, prewarmed=True, retry=0.05)
    claim.saw(Request("stu1"))
    await settle(claim)
    assert claim.state == WAITING
    claim.saw(Request("stu1"))  # too soon: not asked again yet
    await settle(claim)
    assert quota.asked == 1
    await asyncio.sleep(0.06)
    claim.saw(Request("stu1"))
    await settle(claim)
    assert (claim.state, quota.asked) == (CLAIMED, 2)


def test_a_server_not_pre_warmed_claims_nothing_and_logging_still_runs():
    assert Claim("stu1", 4, FakeQuota(), prewarmed=False).state == NONE
    assert Claim("stu1", None, FakeQuota(), prewarmed=True).state == NONE
    logged = []
    app = type("App", (), {"settings": {"log_function": logged.append}})()
    claim = Claim("stu1", 4, FakeQuota(), prewarmed=False)
    watch_requests(app, claim)
    app.settings["log_function"](Request("stu1"))
    assert len(logged) == 1

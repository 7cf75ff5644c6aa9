"""Signing in through a university directory, for real: the hub from hub_config with a deployment
file naming the test directory (Debian's slapd, started by scripts/ldap.sh) and
jupyterhub-ldapauthenticator configured from it.

A directory user signs in through the hub's login page; a wrong password, and a user in none of
the listed groups, are refused; a member of the staff group is staff (the "Running sessions"
page), others are not; a member of a project's directory group starts on that project, and
someone outside it is refused with the sentence.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hubprocess import REPO_ROOT, HubError

from slicehub.common import clock
from slicehub.quota.demo import seed_if_empty
from slicehub.quota.ledger import Ledger
from slicehub.spawners.site import load_site

pytestmark = pytest.mark.integration

CONFIG = REPO_ROOT / "hub_config" / "jupyterhub_config.py"
DEMO_SITE = REPO_ROOT / "hub_config" / "demo-site.toml"


@pytest.fixture
def ldap_hub(hub_factory, tmp_path, ldap_directory):
    d = ldap_directory
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        "[sign_in]\n"
        'method = "ldap"\n'
        f'staff_group = "{d.staff_group_dn}"\n'
        "[sign_in.ldap]\n"
        f'server = "{d.host}"\n'
        f"port = {d.port}\n"
        'tls = "insecure"  # the test directory speaks plain LDAP on the loopback\n'
        f'bind_dn_template = "{d.bind_dn_template}"\n'
        f'groups = ["{d.project_group_dn}"]\n'
    )
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()  # a centre's ledger is set up by staff, not seeded by the hub
    seed_if_empty(
        ledger, {t.name: t.price_cents for t in load_site(DEMO_SITE).slice_types.values()}
    )
    ledger.dispose()
    hub = hub_factory(
        CONFIG, env={"SLICEHUB_DEPLOYMENT": str(deployment), "SLICEHUB_DATA_DIR": str(data)}
    )
    return hub, data, d


def test_directory_users_sign_in_and_staff_come_from_the_staff_group(ldap_hub):
    hub, _, d = ldap_hub
    (ann,) = d.project_members
    (ben,) = d.staff_members
    (cat,) = d.in_no_group
    with pytest.raises(HubError, match=f"login as {ann} failed"):
        hub.login(ann, "not the password")
    with pytest.raises(HubError, match=f"login as {cat} failed"):
        hub.login(cat, d.users[cat])  # a directory user in none of the listed groups
    with hub.login(ben, d.users[ben]) as staff:
        r = staff.get(f"{hub.url}/services/quota/staff", timeout=60)
        assert r.status_code == 200 and "Running sessions" in r.text, r.status_code
    assert hub.api("GET", f"/users/{ben}").json()["admin"] is True
    with hub.login(ann, d.users[ann]) as researcher:
        r = researcher.get(f"{hub.url}/services/quota/staff", timeout=60)
        assert r.status_code == 403
    groups = {g["name"]: g["users"] for g in hub.api("GET", "/groups").json()}
    assert groups["slicehub-staff"] == [ben] and groups["proj-vision"] == [ann]


def test_a_project_group_member_starts_on_that_project(ldap_hub):
    hub, data, d = ldap_hub
    (ann,) = d.project_members
    (ben,) = d.staff_members
    now = clock.utcnow()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    try:
        ledger.add_project(
            "staff",
            "vision",
            scheme="hk-ai-subsidy",
            name="Vision group",
            organisation="Test University",
            pi=ann,
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=30),
            allowed_slice_types=["*"],
            max_concurrent_sessions=5,
            member_group="proj-vision",
            now=now,
        )
        ledger.add_grant(
            "staff", "vision", 100_00, now - timedelta(days=1), now + timedelta(days=30), now
        )
    finally:
        ledger.dispose()
    for user in (ann, ben):  # the hub learns their groups when they sign in
        hub.login(user, d.users[user]).close()
    options = {"project": "vision", "slice_type": "h100.1g.10gb", "duration_hours": 0.5}
    r = hub.start_server(ann, options)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(ann)
    hub.stop_server(ann)
    r = hub.start_server(ben, options)
    assert r.status_code == 403 and "not a member of project vision" in r.json()["message"]

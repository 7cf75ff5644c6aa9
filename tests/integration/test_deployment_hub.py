"""A centre's deployment, for real: the hub started from hub_config/jupyterhub_config.py with a
deployment file and nothing else of the project changed.

- bad deployment input (a missing TLS file, an unknown authenticator, an unreachable ledger, a
  malformed file): the hub does not start, and says the file, the key and the fix;
  `slicehub doctor` reports the same;
- PAM: a Unix account made by the test signs in through the hub's login page (a wrong password
  is refused) and gets a server running as that account; the operator's jupyterhub_config.d is
  loaded after Slicehub's;
- OpenID Connect: no provider can run here, so what is tested is the configuration path: the
  hub starts with GenericOAuthenticator from the deployment file and sends a browser to the
  provider's authorize URL with the client id and the callback.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import pytest
import requests
from hubprocess import REPO_ROOT, HubError

from slicehub.common import clock
from slicehub.quota.demo import seed_if_empty
from slicehub.quota.ledger import Ledger
from slicehub.spawners.site import load_site

pytestmark = pytest.mark.integration

CONFIG = REPO_ROOT / "hub_config" / "jupyterhub_config.py"
DEMO_SITE = REPO_ROOT / "hub_config" / "demo-site.toml"
VENV_BIN = Path(sys.executable).parent
PAM_USER, PAM_PASSWORD = "slicehub-pam1", "a test-only password 7"


def run(args: list[str], deployment: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SLICEHUB_DEPLOYMENT": str(deployment),
        "SLICEHUB_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "text, key, words",
    [
        (
            '[hub]\npublic_url = "https://hub.example.org"\n'
            'tls_cert = "tls/missing.pem"\ntls_key = "tls/missing.pem"\n',
            "hub.tls_cert",
            "does not exist",
        ),
        (
            '[sign_in]\nmethod = "custom"\nauthenticator_class = "kerberosauth.Kerberos"\n',
            "sign_in.authenticator_class",
            "cannot be imported",
        ),
        (
            '[deployment]\nledger_url = "postgresql+psycopg://slicehub@127.0.0.1:9/ledger"\n',
            "deployment.ledger_url",
            "cannot be reached",
        ),
        ('[deployment\nmode = "centre"\n', "(syntax)", "is not valid TOML"),
    ],
    ids=["missing TLS file", "unknown authenticator", "unreachable ledger", "malformed file"],
)
def test_a_bad_deployment_stops_the_hub_and_the_doctor_says_why(tmp_path, text, key, words):
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(text)
    hub = run([str(VENV_BIN / "jupyterhub"), "-f", str(CONFIG)], deployment, tmp_path)
    assert hub.returncode != 0
    assert f"Slicehub cannot start: {deployment}: {key}: " in hub.stderr, hub.stderr[-2000:]
    assert words in hub.stderr and "Fix: " in hub.stderr

    doctor = run([str(VENV_BIN / "slicehub"), "doctor"], deployment, tmp_path)
    assert doctor.returncode == 1, doctor.stdout
    failed = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and words in failed[0] and "Fix: " in failed[0], doctor.stdout


def _unix_account(name: str, password: str) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    return pwd.getpwnam(name)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a Unix account and PAM sign-in need root")
def test_pam_sign_in_runs_the_server_as_the_users_account(hub_factory, tmp_path):
    account = _unix_account(PAM_USER, PAM_PASSWORD)
    site = tmp_path / "site.toml"
    site.write_text(DEMO_SITE.read_text().replace('run_as = "hub-user"', 'run_as = "unix-users"'))
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        f'[deployment]\nsite = "{site}"\n[sign_in]\nmethod = "pam"\nstaff = ["root"]\n'
    )
    (tmp_path / "jupyterhub_config.d").mkdir()
    (tmp_path / "jupyterhub_config.d" / "50-announcement.py").write_text(
        'c.JupyterHub.template_vars = {"announcement_login": "Maintenance on Friday"}\n'
    )
    data = tmp_path / "data"
    data.mkdir()
    # a centre's ledger is set up by staff before the first start; not seeded by the hub
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()
    seed_if_empty(ledger, {t.name: t.price_cents for t in load_site(site).slice_types.values()})
    ledger.add_member("tests", "demo-lab", PAM_USER, clock.utcnow())
    ledger.dispose()
    hub = hub_factory(
        CONFIG, env={"SLICEHUB_DEPLOYMENT": str(deployment), "SLICEHUB_DATA_DIR": str(data)}
    )
    assert "Maintenance on Friday" in hub.get("/hub/login").text  # jupyterhub_config.d loaded
    with pytest.raises(HubError, match="login as slicehub-pam1 failed"):
        hub.login(PAM_USER, "not the password")
    with hub.login(PAM_USER, PAM_PASSWORD) as browser:
        assert PAM_USER in browser.get(f"{hub.url}/hub/home", timeout=30).text
    r = hub.start_server(PAM_USER, {"slice_type": "h100.1g.10gb", "duration_hours": 0.5})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(PAM_USER)
    pid = hub.api("GET", f"/users/{PAM_USER}").json()["servers"][""]["state"]["pid"]
    assert psutil.Process(pid).uids().real == account.pw_uid
    hub.stop_server(PAM_USER)


def test_oidc_sends_the_browser_to_the_provider_with_the_client_id(hub_factory, tmp_path):
    (tmp_path / "oidc-secret").write_text("a test-only client secret\n")
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        '[hub]\npublic_url = "https://hub.example.org"\n'
        '[sign_in]\nmethod = "oidc"\nstaff_group = "hpc-staff"\n'
        '[sign_in.oidc]\nclient_id = "slicehub-test"\nclient_secret_file = "oidc-secret"\n'
        'authorize_url = "https://sso.example.invalid/authorize"\n'
        'token_url = "https://sso.example.invalid/token"\n'
        'userdata_url = "https://sso.example.invalid/userinfo"\n'
    )
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()
    seed_if_empty(
        ledger, {t.name: t.price_cents for t in load_site(DEMO_SITE).slice_types.values()}
    )
    ledger.dispose()
    hub = hub_factory(
        CONFIG, env={"SLICEHUB_DEPLOYMENT": str(deployment), "SLICEHUB_DATA_DIR": str(data)}
    )
    r = hub.get("/hub/oauth_login", allow_redirects=False)
    assert r.status_code == 302, r.text
    target = urlparse(r.headers["Location"])
    query = parse_qs(target.query)
    assert (
        f"{target.scheme}://{target.netloc}{target.path}" == "https://sso.example.invalid/authorize"
    )
    assert query["client_id"] == ["slicehub-test"]
    assert query["redirect_uri"] == ["https://hub.example.org/hub/oauth_callback"]
    assert query["response_type"] == ["code"] and "state" in query


def _sign_up(hub, username: str, password: str) -> None:
    with requests.Session() as browser:
        browser.trust_env = False
        browser.get(f"{hub.url}/hub/signup", timeout=30).raise_for_status()
        r = browser.post(
            f"{hub.url}/hub/signup",
            data={
                "username": username,
                "signup_password": password,
                "signup_password_confirmation": password,
                "_xsrf": browser.cookies.get("_xsrf", ""),
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text[-500:]


def test_sign_up_with_staff_approval(hub_factory, tmp_path):
    deployment = tmp_path / "deployment.toml"
    deployment.write_text('[sign_in]\nmethod = "native"\nstaff = ["labadmin"]\n')
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.sqlite'}")
    ledger.upgrade()
    seed_if_empty(
        ledger, {t.name: t.price_cents for t in load_site(DEMO_SITE).slice_types.values()}
    )
    ledger.dispose()
    hub = hub_factory(
        CONFIG, env={"SLICEHUB_DEPLOYMENT": str(deployment), "SLICEHUB_DATA_DIR": str(data)}
    )
    _sign_up(hub, "labadmin", "staff-test-only-password-1")  # staff are approved at sign-up
    _sign_up(hub, "newbie", "newbie-test-only-password-1")
    with pytest.raises(HubError, match="login as newbie failed"):
        hub.login("newbie", "newbie-test-only-password-1")  # not approved yet
    with hub.login("labadmin", "staff-test-only-password-1") as staff:
        r = staff.get(f"{hub.url}/hub/authorize/newbie", timeout=30)
        assert r.status_code == 200, r.status_code
    with hub.login("newbie", "newbie-test-only-password-1") as browser:
        assert "newbie" in browser.get(f"{hub.url}/hub/home", timeout=30).text

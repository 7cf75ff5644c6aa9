"""The deployment file (slicehub/deployment.py): what an operator may write, and every mistake
refused before the hub starts with the file, the key and the fix. And where the settings come
from: the environment, then the deployment file, then the one default."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from slicehub.config_file import ConfigFileError
from slicehub.deployment import load_deployment
from slicehub.settings import Settings
from slicehub.sign_in import Directory, configure_sign_in, group_name

REPO = Path(__file__).resolve().parents[2]
LDAP = """
[sign_in]
method = "ldap"
staff = ["ops"]
staff_group = "cn=slicehub-staff,ou=groups,dc=example,dc=org"
[sign_in.ldap]
server = "ldap.example.org"
bind_dn_template = "uid={username},ou=people,dc=example,dc=org"
groups = ["cn=proj-vision,ou=groups,dc=example,dc=org"]
"""


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "deployment.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def test_no_file_is_a_lab_server_signing_in_through_pam():
    d = load_deployment(None)
    assert (d.mode, d.sign_in.method, d.sign_in.allow_all) == ("centre", "pam", True)
    assert d.hub.public_url == "http://127.0.0.1:8000" and not d.demo


def test_the_demo_deployment_is_demo_mode():
    d = load_deployment(REPO / "hub_config" / "demo.toml")
    assert d.demo and d.sign_in.method == "demo"
    assert d.site == str(REPO / "hub_config" / "demo-site.toml")  # relative to the file


def test_a_centre_with_tls_postgresql_and_ldap(write, tmp_path):
    (tmp_path / "tls").mkdir()
    for name in ("cert.pem", "key.pem"):
        (tmp_path / "tls" / name).write_text("test")
    path = write(
        """
[deployment]
data_dir = "/var/lib/slicehub"
site = "site.toml"
ledger_url = "postgresql+psycopg://slicehub@db.example.org/slicehub"
[hub]
public_url = "https://hub.example.org"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
server_bind_ip = "0.0.0.0"
"""
        + LDAP
    )
    d = load_deployment(path)
    assert d.data_dir == "/var/lib/slicehub" and d.site == str(tmp_path / "site.toml")
    assert d.hub.tls_cert == tmp_path / "tls" / "cert.pem" and d.hub.server_bind_ip == "0.0.0.0"
    assert d.overrides == tmp_path / "jupyterhub_config.d"
    ldap = d.sign_in.ldap
    assert (ldap.server, ldap.port, ldap.tls) == ("ldap.example.org", 389, "before_bind")
    assert d.sign_in.staff == ("ops",) and not d.sign_in.allow_all


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("[deployment\nmode = 1", "(syntax)", "not valid TOML"),
        ("[deployment]\nmode = 'production'", "deployment.mode", "'production' is not allowed"),
        ("[deployment]\ncolour = 'blue'", "deployment.colour", "not a setting Slicehub knows"),
        ("[hub]\npublic_url = 'hub.example.org'", "hub.public_url", "not an http(s) URL"),
        (
            "[hub]\npublic_url = 'https://h.org'\ntls_cert = 'nope.pem'\ntls_key = 'nope.pem'",
            "hub.tls_cert",
            "does not exist",
        ),
        ("[sign_in]\nmethod = 'kerberos'", "sign_in.method", "'kerberos' is not allowed"),
        ("[sign_in]\nmethod = 'demo'", "sign_in.method", "outside demo mode"),
        (
            "[sign_in]\nmethod = 'custom'\nauthenticator_class = 'nowhere.Auth'",
            "sign_in.authenticator_class",
            "cannot be imported",
        ),
        (
            "[sign_in]\nmethod = 'ldap'\n[sign_in.ldap]\nserver = 'x'",
            "sign_in.ldap.bind_dn_template",
            "has no {username}",
        ),
        (
            "[sign_in]\nmethod = 'pam'\n[sign_in.ldap]\nserver = 'x'",
            "sign_in.ldap",
            "method is 'pam'",
        ),
        ("[deployment]\nmode = 'demo'\n[sign_in]\nmethod = 'pam'", "sign_in.method", "demo mode"),
        ("[sign_in]\nallow_all = 'yes'", "sign_in.allow_all", "not true or false"),
    ],
)
def test_a_mistake_names_the_file_the_key_and_the_fix(write, text, key, words):
    path = write(text)
    with pytest.raises(ConfigFileError) as refused:
        load_deployment(path)
    e = refused.value
    assert e.path == str(path) and e.key == key and words in e.problem, str(e)
    assert e.fix and str(e).endswith(e.fix)


def test_oidc_needs_a_readable_client_secret_and_the_providers_urls(write, tmp_path):
    text = """
[hub]
public_url = "https://hub.example.org"
[sign_in]
method = "oidc"
staff_group = "hpc-staff"
[sign_in.oidc]
client_id = "slicehub"
client_secret_file = "oidc-secret"
authorize_url = "https://sso.example.org/authorize"
token_url = "https://sso.example.org/token"
userdata_url = "https://sso.example.org/userinfo"
"""
    path = write(text)
    with pytest.raises(ConfigFileError, match="oidc-secret does not exist"):
        load_deployment(path)
    (tmp_path / "oidc-secret").write_text("s3cret\n")
    d = load_deployment(path)
    c = Config()
    configure_sign_in(c, d.sign_in, d.hub.public_url)
    g = c.GenericOAuthenticator
    assert c.JupyterHub.authenticator_class == "oauthenticator.generic.GenericOAuthenticator"
    assert g.client_secret == "s3cret" and g.admin_groups == {"hpc-staff"}
    assert g.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert g.auth_state_groups_key == "oauth_user.groups" and c.Authenticator.manage_groups


def test_ldap_looks_up_the_listed_groups_and_the_staff_group(write):
    d = load_deployment(write(LDAP))
    c = Config()
    configure_sign_in(c, d.sign_in, d.hub.public_url)
    assert c.JupyterHub.authenticator_class == "ldapauthenticator.LDAPAuthenticator"
    assert c.LDAPAuthenticator.allowed_groups == [
        "cn=proj-vision,ou=groups,dc=example,dc=org",
        "cn=slicehub-staff,ou=groups,dc=example,dc=org",
    ]
    assert c.LDAPAuthenticator.bind_dn_template == ["uid={username},ou=people,dc=example,dc=org"]
    assert c.Authenticator.admin_users == {"ops"} and c.Authenticator.allow_all is False


def test_the_hook_names_groups_and_staff_alike_for_every_directory(write):
    hook = Directory(load_deployment(write(LDAP)).sign_in)
    auth = {
        "name": "ann",
        "auth_state": {"ldap_groups": ["cn=proj-vision,ou=groups,dc=example,dc=org"]},
    }
    assert hook(None, None, auth)["groups"] == ["proj-vision"] and "admin" not in auth
    ben = {
        "name": "ben",
        "auth_state": {"ldap_groups": ["cn=slicehub-staff,ou=groups,dc=example,dc=org"]},
    }
    assert hook(None, None, ben)["admin"] is True
    assert hook(None, None, {"name": "ops", "auth_state": {}})["admin"] is True
    assert group_name("cn=lab,ou=groups,dc=x") == "lab" and group_name("hpc-staff") == "hpc-staff"


def test_pam_groups_are_the_accounts_unix_groups(write):
    hook = Directory(load_deployment(write("[sign_in]\nstaff_group = 'root'")).sign_in)
    root = hook(None, None, {"name": "root"})
    assert "root" in root["groups"] and root["admin"] is True
    assert hook(None, None, {"name": "no-such-account-here"})["groups"] == []


def test_settings_take_the_environment_then_the_deployment_then_the_default(
    write, monkeypatch, tmp_path
):
    path = write(
        '[deployment]\ndata_dir = "state"\nledger_url = "postgresql+psycopg://db/ledger"\n'
    )
    for name in ("SLICEHUB_DATA_DIR", "SLICEHUB_LEDGER_URL", "SLICEHUB_SITE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(path))
    s = Settings()
    assert s.data_dir == str(tmp_path / "state")
    assert s.ledger_url == "postgresql+psycopg://db/ledger"
    assert s.site_file.endswith("demo-site.toml")  # the one default
    monkeypatch.setenv("SLICEHUB_LEDGER_URL", "sqlite:////tmp/x.sqlite")
    assert Settings().ledger_url == "sqlite:////tmp/x.sqlite"


def doctor_lines(monkeypatch, deployment: Path, data: Path) -> list[str]:
    from slicehub.doctor import report

    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(deployment))
    monkeypatch.setenv("SLICEHUB_DATA_DIR", str(data))
    for name in ("SLICEHUB_LEDGER_URL", "SLICEHUB_SITE"):
        monkeypatch.delenv(name, raising=False)
    text, ok = report()
    lines = text.splitlines()
    assert ok == all(line.startswith("OK") for line in lines)
    return lines


def test_the_doctor_passes_a_fresh_demo_and_changes_nothing(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    lines = doctor_lines(monkeypatch, REPO / "hub_config" / "demo.toml", tmp_path / "data")
    assert all(line.startswith("OK") for line in lines), lines
    assert any("seeded at the demo's first start" in line for line in lines)
    assert list((tmp_path / "data").iterdir()) == []  # no ledger made, nothing written


def test_the_doctor_names_what_a_centre_lacks(monkeypatch, tmp_path, write):
    from slicehub.quota.ledger import Ledger
    from slicehub.quota.store import make_engine

    data = tmp_path / "data"
    data.mkdir()
    token = data / "proxy_auth_token"
    token.write_text("t")
    token.chmod(0o644)
    deployment = write("[sign_in]\nmethod = 'pam'\n")
    lines = doctor_lines(monkeypatch, deployment, data)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any("ledger.sqlite does not exist yet" in line for line in failed), lines
    assert any("proxy token" in line and "chmod 600" in line for line in failed), lines

    make_engine(f"sqlite:///{data / 'ledger.sqlite'}").dispose()  # an empty ledger file
    with Ledger(f"sqlite:///{data / 'ledger.sqlite'}").engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE placeholder (x INTEGER)")
    failed = [line for line in doctor_lines(monkeypatch, deployment, data) if "FAIL" in line]
    assert any(
        "migrations 0001, 0002, 0003, 0004, 0005, 0006 are not applied" in line for line in failed
    )


def test_configure_applies_the_deployment_to_the_hub(monkeypatch, tmp_path, write):
    from slicehub.hub import configure, overrides

    (tmp_path / "tls").mkdir()
    for name in ("cert.pem", "key.pem"):
        (tmp_path / "tls" / name).write_text("test")
    (tmp_path / "jupyterhub_config.d").mkdir()
    (tmp_path / "jupyterhub_config.d" / "20-b.py").write_text("")
    (tmp_path / "jupyterhub_config.d" / "10-a.py").write_text("")
    deployment = write(
        f'[deployment]\ndata_dir = "data"\nsite = "{REPO / "hub_config" / "demo-site.toml"}"\n'
        '[hub]\npublic_url = "https://hub.example.org"\n'
        'tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n'
        "[sign_in]\nmethod = 'pam'\nstaff = ['ops']\nstaff_group = 'hpc-staff'\n"
    )
    for name in ("SLICEHUB_DATA_DIR", "SLICEHUB_LEDGER_URL", "SLICEHUB_SITE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(deployment))
    c = Config()
    configure(c)
    hub = c.JupyterHub
    assert hub.bind_url == "https://hub.example.org"
    assert (hub.ssl_cert, hub.ssl_key) == (
        str(tmp_path / "tls" / "cert.pem"),
        str(tmp_path / "tls" / "key.pem"),
    )
    assert hub.authenticator_class == "jupyterhub.auth.PAMAuthenticator"
    assert hub.db_url == f"sqlite:///{tmp_path / 'data' / 'jupyterhub.sqlite'}"
    staff_role = next(r for r in hub.load_roles if r["name"] == "quota-staff")
    assert staff_role["users"] == ["ops"] and staff_role["groups"] == ["hpc-staff"]
    [quota] = [s for s in hub.services if s["name"] == "quota"]
    assert "--seed-demo" not in quota["command"]  # outside demo mode nothing is seeded
    assert [p.name for p in overrides()] == ["10-a.py", "20-b.py"]

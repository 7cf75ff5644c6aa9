"""The deployment file (slicehub/deployment.py): what an operator may write, and every mistake
refused before the hub starts with the file, the key and the fix. And where the settings come
from: the environment, then the deployment file, then the one default. [smtp] and [scheme]: the
hub's scheme roles, and the quota service reading [smtp] from the file it is given (the password
stays in its own file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from slicehub.config_file import ConfigFileError
from slicehub.deployment import Smtp, load_deployment
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
SMTP = '[smtp]\nhost = "smtp.example.org"\nfrom_addr = "Slicehub <slicehub@example.org>"\n'


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
        (SMTP + 'password = "s3cret"\n', "smtp.password", "never written in the deployment"),
        (SMTP + 'colour = "blue"\n', "smtp.colour", "not a setting Slicehub knows"),
        ('[smtp]\nfrom_addr = "a@example.org"\n', "smtp.host", "is missing"),
        (
            '[smtp]\nhost = "smtp://smtp.example.org"\nfrom_addr = "a@example.org"\n',
            "smtp.host",
            "is not a server's name",
        ),
        ('[smtp]\nhost = "smtp.example.org"\n', "smtp.from_addr", "is missing"),
        (
            '[smtp]\nhost = "smtp.example.org"\nfrom_addr = "slicehub"\n',
            "smtp.from_addr",
            "is not an e-mail address",
        ),
        (SMTP + "port = 0\n", "smtp.port", "out of range"),
        (SMTP + 'port = "587"\n', "smtp.port", "not a whole number"),
        (SMTP + 'starttls = "yes"\n', "smtp.starttls", "not true or false"),
        (SMTP + "ssl = true\nstarttls = true\n", "smtp.starttls", "together with ssl"),
        (SMTP + 'username = "slicehub"\n', "smtp.password_file", "is missing"),
        (SMTP + 'password_file = "smtp-password"\n', "smtp.username", "is missing"),
        (
            SMTP + 'starttls = false\nusername = "s"\npassword_file = "smtp-password"\n',
            "smtp.username",
            "password in clear",
        ),
        (
            SMTP + 'username = "s"\npassword_file = "nowhere"\n',
            "smtp.password_file",
            "does not exist",
        ),
        (SMTP + 'timeout = "30"\n', "smtp.timeout", "not a length of time"),
        (SMTP + 'timeout = "2 h"\n', "smtp.timeout", "out of range"),
        ("smtp = 1\n", "smtp", "must be a table"),
        ('[scheme]\ncommittee = ["rev-chan", 7]\n', "scheme.committee", "not a list of strings"),
        ("[scheme]\nsecretariat_group = 3\n", "scheme.secretariat_group", "not a string"),
        ('[scheme]\nreviewers = ["x"]\n', "scheme.reviewers", "not a setting Slicehub knows"),
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


def test_ldap_looks_up_the_schemes_groups_too(write):
    committee = "cn=scheme-committee,ou=groups,dc=example,dc=org"
    d = load_deployment(write(LDAP + f'[scheme]\ncommittee_group = "{committee}"\n'))
    c = Config()
    configure_sign_in(c, d.sign_in, d.hub.public_url, (d.scheme.committee_group, ""))
    assert committee in c.LDAPAuthenticator.allowed_groups


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
        "migrations 0001, 0002, 0003, 0004, 0005, 0006, 0007, 0008 are not applied" in line
        for line in failed
    )


def configured(monkeypatch, deployment: Path):
    """The hub's config (`c.JupyterHub`) for `deployment`, nothing taken from the environment."""
    from slicehub.hub import configure

    for name in ("SLICEHUB_DATA_DIR", "SLICEHUB_LEDGER_URL", "SLICEHUB_SITE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(deployment))
    c = Config()
    configure(c)
    return c.JupyterHub


def test_configure_applies_the_deployment_to_the_hub(monkeypatch, tmp_path, write):
    from slicehub.hub import overrides

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
    hub = configured(monkeypatch, deployment)
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


@pytest.fixture
def password(tmp_path) -> Path:
    path = tmp_path / "smtp-password"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


def test_without_smtp_there_is_no_server_and_nobody_runs_the_scheme():
    d = load_deployment(REPO / "hub_config" / "demo.toml")
    assert d.smtp is None
    assert (d.scheme.secretariat, d.scheme.committee_group) == ((), "")


@pytest.mark.parametrize(
    "extra, port, starttls, ssl",
    [
        ("", 587, True, False),  # submission with STARTTLS: the usual
        ("ssl = true\n", 465, False, True),
        ("starttls = false\n", 25, False, False),  # a relay on the local network
        ("port = 2525\n", 2525, True, False),
    ],
)
def test_smtp_defaults_follow_the_kind_of_tls(write, extra, port, starttls, ssl):
    smtp = load_deployment(write(SMTP + extra)).smtp
    assert (smtp.port, smtp.starttls, smtp.ssl) == (port, starttls, ssl)
    assert (smtp.username, smtp.password_file, smtp.timeout_s) == ("", None, 30)


def test_a_signed_in_server_names_its_password_file(write, password):
    extra = 'username = "slicehub"\npassword_file = "smtp-password"\ntimeout = "1 min"\n'
    smtp = load_deployment(write(SMTP + extra)).smtp
    assert smtp == Smtp(
        "smtp.example.org",
        587,
        "Slicehub <slicehub@example.org>",
        True,
        False,
        "slicehub",
        password,
        60,
    )


def test_a_password_file_others_may_read_is_refused(write, password):
    password.chmod(0o640)
    path = write(SMTP + 'username = "slicehub"\npassword_file = "smtp-password"\n')
    with pytest.raises(ConfigFileError) as refused:
        load_deployment(path)
    assert str(refused.value) == (
        f"{path}: smtp.password_file: {password} may be read by others (mode 640). "
        f"Fix: chmod 600 {password}"
    )


def test_the_hub_gives_the_scheme_roles_and_the_quota_service_the_deployment_file(
    monkeypatch, tmp_path, write, password
):
    deployment = write(
        f'[deployment]\ndata_dir = "data"\nsite = "{REPO / "hub_config" / "demo-site.toml"}"\n'
        + SMTP
        + 'username = "slicehub"\npassword_file = "smtp-password"\n'
        + '[scheme]\nsecretariat = ["sec-lee"]\n'
        + 'secretariat_group = "cn=scheme-office,ou=groups,dc=example,dc=org"\n'
        + 'committee = ["rev-chan", "rev-wong"]\ncommittee_group = "scheme-committee"\n'
    )
    hub = configured(monkeypatch, deployment)
    roles = {r["name"]: r for r in hub.load_roles}
    assert roles["scheme-secretariat"] == {
        "name": "scheme-secretariat",
        "users": ["sec-lee"],
        "groups": ["scheme-office"],  # a directory group's hub name, as staff_group's
        "scopes": ["custom:scheme:secretariat", "access:services!service=quota"],
    }
    assert roles["scheme-committee"]["users"] == ["rev-chan", "rev-wong"]
    assert roles["scheme-committee"]["groups"] == ["scheme-committee"]
    assert roles["scheme-committee"]["scopes"][0] == "custom:scheme:committee"
    assert {"custom:scheme:secretariat", "custom:scheme:committee"} <= set(hub.custom_scopes)
    [quota] = [s for s in hub.services if s["name"] == "quota"]
    assert {"custom:scheme:secretariat", "custom:scheme:committee"} <= set(
        quota["oauth_client_allowed_scopes"]
    )
    assert f"--deployment={deployment}" in quota["command"]
    assert not any("s3cret" in part for part in quota["command"])
    assert not any("s3cret" in value for value in quota["environment"].values())


def test_the_quota_service_takes_smtp_from_the_deployment_file(
    tmp_path, write, password, monkeypatch, capsys
):
    from slicehub.quota.service import SlicehubQuota

    monkeypatch.delenv("SLICEHUB_DEPLOYMENT", raising=False)
    ledger = f"--ledger-url=sqlite:///{tmp_path / 'ledger.sqlite'}"

    def start(*argv: str) -> SlicehubQuota:
        app = SlicehubQuota()
        app.initialize([ledger, *argv])
        app.ledger.dispose()
        return app

    path = write(SMTP + 'username = "slicehub"\npassword_file = "smtp-password"\n')
    app = start(f"--deployment={path}", "--mail-interval=2")
    assert (app.smtp.host, app.smtp.password_file, app.mail_interval) == (
        "smtp.example.org",
        password,
        2,
    )
    monkeypatch.setenv("SLICEHUB_MAIL_INTERVAL", "1.5")
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(path))
    assert (start().smtp.host, start().mail_interval) == ("smtp.example.org", 1.5)
    monkeypatch.delenv("SLICEHUB_DEPLOYMENT")
    assert start().smtp is None  # no deployment file: mail stays queued

    bad = write(SMTP + "port = 0\n", "bad.toml")
    with pytest.raises(SystemExit) as exit_:
        start(f"--deployment={bad}")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"Slicehub cannot start: {bad}: smtp.port: 0 is out of range. "
        "Fix: write a number from 1 to 65535\n"
    )

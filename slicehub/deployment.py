"""The deployment file: one operator's settings, kept outside the project's files.

A centre writes one TOML file (by default /etc/slicehub/deployment.toml, or wherever
SLICEHUB_DEPLOYMENT points) and never edits the project: where the state lives (data dir,
ledger), which site file it serves, the public URL and TLS (or the reverse proxy in front), how
people sign in (PAM, LDAP, OpenID Connect, sign-up with approval), who is staff, the mail server
the subsidy scheme's e-mails leave through, and who is its secretariat and committee. JupyterHub
settings it does not cover go in `jupyterhub_config.d/*.py` beside it, loaded after Slicehub's
(as Zero-to-JupyterHub's extraConfig, TLJH's jupyterhub_config.d).

    [deployment]
    mode = "centre"                  # "demo": the embedded demo, its users and seeded ledger
    data_dir = "/var/lib/slicehub"   # relative paths are relative to this file
    site = "site.toml"
    ledger_url = "postgresql+psycopg://slicehub@db.example.org/slicehub"

    [hub]
    public_url = "https://hub.example.org"
    tls_cert = "/etc/slicehub/tls/fullchain.pem"
    tls_key = "/etc/slicehub/tls/privkey.pem"

    [sign_in]
    method = "ldap"                  # pam | ldap | oidc | native | custom
    staff = ["ops-admin"]
    staff_group = "slicehub-staff"

    [sign_in.ldap]
    server = "ldap.example.org"
    bind_dn_template = "uid={username},ou=people,dc=example,dc=org"
    groups = ["cn=slicehub-staff,ou=groups,dc=example,dc=org"]

    [smtp]                           # the scheme's e-mails leave through this server
    host = "smtp.example.org"
    from_addr = "Slicehub <slicehub@example.org>"
    username = "slicehub"
    password_file = "smtp-password"  # mode 0600; the password is never written here

    [scheme]                         # the subsidy scheme's secretariat and committee
    secretariat_group = "scheme-secretariat"
    committee = ["rev-chan", "rev-wong"]

Without a deployment file Slicehub runs as a lab server: PAM sign-in, the site file from
SLICEHUB_SITE, state in .data. Every problem is a `ConfigFileError` naming the file, the key and
the fix, raised before the hub starts. This module reads and checks; `slicehub.hub` applies.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .config_file import (
    ConfigFileError,
    check_bool,
    check_choice,
    check_duration,
    check_int,
    check_known,
    check_table,
)

SYSTEM_FILE = Path("/etc/slicehub/deployment.toml")
MODES = ("centre", "demo")
METHODS = ("pam", "ldap", "oidc", "native", "custom")
LDAP_TLS = ("before_bind", "on_connect", "insecure")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
OVERRIDES = "jupyterhub_config.d"


@dataclass(frozen=True)
class LdapSignIn:
    server: str
    port: int
    tls: str
    bind_dn_templates: tuple[str, ...]
    groups: tuple[str, ...]  # directory groups (full DNs) that matter: sign-in, staff, projects


@dataclass(frozen=True)
class OidcSignIn:
    client_id: str
    client_secret_file: Path
    authorize_url: str
    token_url: str
    userdata_url: str
    username_claim: str
    groups_claim: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class NativeSignIn:
    open_signup: bool
    minimum_password_length: int


@dataclass(frozen=True)
class SignIn:
    method: str  # METHODS, or "demo" in demo mode
    staff: tuple[str, ...] = ()
    staff_group: str = ""  # a directory (or Unix) group whose members are staff
    allowed_users: tuple[str, ...] = ()
    allow_all: bool = False  # anyone who signs in; else allowed_users and the listed groups
    authenticator_class: str = ""  # method "custom": a JupyterHub Authenticator, importable
    ldap: LdapSignIn | None = None
    oidc: OidcSignIn | None = None
    native: NativeSignIn | None = None


@dataclass(frozen=True)
class Hub:
    public_url: str = DEFAULT_PUBLIC_URL
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[str, ...] = ()  # reverse proxies whose X-Forwarded-* headers count
    server_bind_ip: str = ""  # where Slurm jobs' servers listen ("": the spawner's default)
    server_quota_url: str = ""  # the quota service as compute nodes reach it ("": the hub's)


@dataclass(frozen=True)
class Smtp:
    """The deployment's mail server: the scheme's e-mails leave through it
    (`slicehub.quota.scheme.mailer`)."""

    host: str
    port: int
    from_addr: str  # an address, with or without a display name
    starttls: bool = True  # upgrade a plain connection before anything else is said
    ssl: bool = False  # TLS from the first byte (port 465)
    username: str = ""  # "": no AUTH
    password_file: Path | None = None  # read at each connection, never kept in settings
    timeout_s: int = 30


@dataclass(frozen=True)
class SchemeRoles:
    """Who runs the subsidy scheme's workflow besides staff: by name or by group (a directory
    group, as staff_group)."""

    secretariat: tuple[str, ...] = ()
    secretariat_group: str = ""
    committee: tuple[str, ...] = ()
    committee_group: str = ""


@dataclass(frozen=True)
class Deployment:
    path: Path | None  # None: no deployment file, a lab server's defaults
    mode: str = "centre"
    data_dir: str = ""
    site: str = ""
    ledger_url: str = ""
    overrides: Path | None = None  # jupyterhub_config.d: the operator's own JupyterHub settings
    hub: Hub = field(default_factory=Hub)
    sign_in: SignIn = field(default_factory=lambda: SignIn("pam", allow_all=True))
    smtp: Smtp | None = None  # None: mail stays queued in the outbox
    scheme: SchemeRoles = field(default_factory=SchemeRoles)

    @property
    def demo(self) -> bool:
        return self.mode == "demo"


def deployment_file(environ=os.environ) -> Path | None:
    """The deployment file in effect: SLICEHUB_DEPLOYMENT, else /etc/slicehub/deployment.toml
    when it exists, else none."""
    named = environ.get("SLICEHUB_DEPLOYMENT")
    if named:
        return Path(named)
    return SYSTEM_FILE if SYSTEM_FILE.exists() else None


def load_deployment(path: Path | str | None) -> Deployment:
    """The deployment file at `path`, checked (None: the lab server's defaults)."""
    if path is None:
        return Deployment(None)
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(
            path, "(file)", "does not exist", "point SLICEHUB_DEPLOYMENT at a deployment file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(path, "(file)", f"cannot be read ({e})", "check it") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(
            path, "(syntax)", f"is not valid TOML ({e})", "correct the syntax"
        ) from None
    return parse_deployment(raw, path)


def parse_deployment(raw: dict[str, Any], path: Path) -> Deployment:
    check_known(path, "", raw, {"deployment", "hub", "sign_in", "smtp", "scheme"})
    head = check_table(path, "deployment", raw.get("deployment", {}))
    check_known(path, "deployment", head, {"mode", "data_dir", "site", "ledger_url", "overrides"})
    mode = check_choice(path, "deployment.mode", head.get("mode", "centre"), MODES)
    here = path.parent
    data_dir = _path_text(path, "deployment.data_dir", head.get("data_dir"), here)
    site = _path_text(path, "deployment.site", head.get("site"), here)
    ledger_url = _text(path, "deployment.ledger_url", head.get("ledger_url", ""))
    overrides = _path_text(path, "deployment.overrides", head.get("overrides"), here)
    hub = _hub(path, check_table(path, "hub", raw.get("hub", {})), here)
    sign_in = _sign_in(path, check_table(path, "sign_in", raw.get("sign_in", {})), mode, hub, here)
    smtp = _smtp(path, check_table(path, "smtp", raw["smtp"]), here) if "smtp" in raw else None
    return Deployment(
        path,
        mode,
        data_dir,
        site,
        ledger_url,
        Path(overrides) if overrides else here / OVERRIDES,
        hub,
        sign_in,
        smtp,
        _scheme(path, check_table(path, "scheme", raw.get("scheme", {}))),
    )


def _text(path, key, value, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ConfigFileError(path, key, f"{value!r} is not a string", f'write {key} = "..."')
    if required and not value:
        raise ConfigFileError(path, key, "is missing", f"set {key}")
    return value


def _texts(path, key, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigFileError(path, key, f"{value!r} is not a list of strings", 'write ["a", "b"]')
    return tuple(value)


def _path_text(path, key, value, here: Path) -> str:
    text = _text(path, key, value)
    return str((here / text).resolve()) if text else ""


def _url(path, key, value, default: str = "") -> str:
    text = _text(path, key, value) or default
    if not text:
        return ""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigFileError(
            path, key, f"{text!r} is not an http(s) URL", 'write e.g. "https://hub.example.org"'
        )
    return text


def _readable(path, key, value, here: Path) -> Path:
    """A file Slicehub must read at start-up (a TLS key, a client secret)."""
    text = _text(path, key, value, required=True)
    file = (here / text).resolve()
    if not file.is_file():
        raise ConfigFileError(path, key, f"{file} does not exist", "give the path of the file")
    if not os.access(file, os.R_OK):
        raise ConfigFileError(
            path, key, f"{file} cannot be read by this user", "let the hub's account read it"
        )
    return file


def _hub(path, table, here: Path) -> Hub:
    check_known(
        path,
        "hub",
        table,
        {
            "public_url",
            "tls_cert",
            "tls_key",
            "trusted_proxies",
            "server_bind_ip",
            "server_quota_url",
        },
    )
    public_url = _url(path, "hub.public_url", table.get("public_url"), DEFAULT_PUBLIC_URL)
    cert = key = None
    if "tls_cert" in table or "tls_key" in table:
        cert = _readable(path, "hub.tls_cert", table.get("tls_cert"), here)
        key = _readable(path, "hub.tls_key", table.get("tls_key"), here)
        if urlparse(public_url).scheme != "https":
            raise ConfigFileError(
                path,
                "hub.public_url",
                f"{public_url} is not https although tls_cert and tls_key are set",
                'write public_url = "https://..."',
            )
    proxies = _texts(path, "hub.trusted_proxies", table.get("trusted_proxies"))
    if proxies and cert:
        raise ConfigFileError(
            path,
            "hub.trusted_proxies",
            "is set together with tls_cert: TLS ends either here or at the reverse proxy",
            "keep tls_cert/tls_key (the hub serves TLS) or trusted_proxies (a proxy does)",
        )
    return Hub(
        public_url,
        cert,
        key,
        proxies,
        _text(path, "hub.server_bind_ip", table.get("server_bind_ip")),
        _url(path, "hub.server_quota_url", table.get("server_quota_url")),
    )


def _sign_in(path, table, mode: str, hub: Hub, here: Path) -> SignIn:
    check_known(
        path,
        "sign_in",
        table,
        {
            "method",
            "staff",
            "staff_group",
            "allowed_users",
            "allow_all",
            "authenticator_class",
            "ldap",
            "oidc",
            "native",
        },
    )
    if mode == "demo":
        method = _text(path, "sign_in.method", table.get("method", "demo"))
        if method != "demo":
            raise ConfigFileError(
                path,
                "sign_in.method",
                f"{method!r} in demo mode: the demo signs in its own users",
                'write method = "demo", or mode = "centre" for real sign-in',
            )
        return SignIn("demo")
    method = table.get("method", "pam")
    if method == "demo":
        raise ConfigFileError(
            path,
            "sign_in.method",
            '"demo" outside demo mode: the demo\'s shared password is for demos only',
            f"use one of: {', '.join(METHODS)}",
        )
    method = check_choice(path, "sign_in.method", method, METHODS)
    allow_all = check_bool(path, "sign_in.allow_all", table.get("allow_all", method == "pam"))
    spec = dict(
        method=method,
        staff=_texts(path, "sign_in.staff", table.get("staff")),
        staff_group=_text(path, "sign_in.staff_group", table.get("staff_group")),
        allowed_users=_texts(path, "sign_in.allowed_users", table.get("allowed_users")),
        allow_all=allow_all,
    )
    for other in ("ldap", "oidc", "native"):
        if other in table and other != method:
            raise ConfigFileError(
                path,
                f"sign_in.{other}",
                f"is set but sign_in.method is {method!r}",
                f"remove [sign_in.{other}] or set method = {other!r}",
            )
    if method == "custom":
        spec["authenticator_class"] = _importable(path, table.get("authenticator_class"))
    elif "authenticator_class" in table:
        raise ConfigFileError(
            path,
            "sign_in.authenticator_class",
            f'is only for method = "custom", not {method!r}',
            'remove it, or set method = "custom"',
        )
    if method == "ldap":
        spec["ldap"] = _ldap(path, check_table(path, "sign_in.ldap", table.get("ldap", {})))
    elif method == "oidc":
        spec["oidc"] = _oidc(path, check_table(path, "sign_in.oidc", table.get("oidc", {})), here)
    elif method == "native":
        spec["native"] = _native(path, check_table(path, "sign_in.native", table.get("native", {})))
    return SignIn(**spec)


def _importable(path, value) -> str:
    key = "sign_in.authenticator_class"
    name = _text(path, key, value, required=True)
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr) if module else None
    except ImportError as e:
        found, why = None, f"cannot be imported ({e})"
    else:
        why = "is not a class in that module"
    if not isinstance(found, type):
        raise ConfigFileError(
            path,
            key,
            f"{name!r} {why}",
            "name a JupyterHub Authenticator installed in the hub's environment, "
            'e.g. "oauthenticator.github.GitHubOAuthenticator"',
        )
    return name


def _ldap(path, table) -> LdapSignIn:
    key = "sign_in.ldap"
    check_known(path, key, table, {"server", "port", "tls", "bind_dn_template", "groups"})
    tls = check_choice(path, f"{key}.tls", table.get("tls", "before_bind"), LDAP_TLS)
    templates = _texts(path, f"{key}.bind_dn_template", table.get("bind_dn_template"))
    if not templates or not all("{username}" in t for t in templates):
        raise ConfigFileError(
            path,
            f"{key}.bind_dn_template",
            "is missing or has no {username}",
            'write e.g. "uid={username},ou=people,dc=example,dc=org"',
        )
    default_port = 636 if tls == "on_connect" else 389
    return LdapSignIn(
        _text(path, f"{key}.server", table.get("server"), required=True),
        check_int(path, f"{key}.port", table.get("port", default_port), 1, 65535),
        tls,
        templates,
        _texts(path, f"{key}.groups", table.get("groups")),
    )


def _oidc(path, table, here: Path) -> OidcSignIn:
    key = "sign_in.oidc"
    check_known(
        path,
        key,
        table,
        {
            "client_id",
            "client_secret_file",
            "authorize_url",
            "token_url",
            "userdata_url",
            "username_claim",
            "groups_claim",
            "scopes",
        },
    )
    return OidcSignIn(
        _text(path, f"{key}.client_id", table.get("client_id"), required=True),
        _readable(path, f"{key}.client_secret_file", table.get("client_secret_file"), here),
        _url(path, f"{key}.authorize_url", table.get("authorize_url"))
        or _missing(path, f"{key}.authorize_url"),
        _url(path, f"{key}.token_url", table.get("token_url"))
        or _missing(path, f"{key}.token_url"),
        _url(path, f"{key}.userdata_url", table.get("userdata_url"))
        or _missing(path, f"{key}.userdata_url"),
        _text(path, f"{key}.username_claim", table.get("username_claim", "preferred_username")),
        _text(path, f"{key}.groups_claim", table.get("groups_claim", "groups")),
        _texts(path, f"{key}.scopes", table.get("scopes", ["openid", "profile", "email"])),
    )


def _missing(path, key) -> str:
    raise ConfigFileError(path, key, "is missing", "copy it from the provider's discovery document")


def _native(path, table) -> NativeSignIn:
    key = "sign_in.native"
    check_known(path, key, table, {"open_signup", "minimum_password_length"})
    open_signup = check_bool(path, f"{key}.open_signup", table.get("open_signup", False))
    return NativeSignIn(
        open_signup,
        check_int(
            path, f"{key}.minimum_password_length", table.get("minimum_password_length", 10), 8, 128
        ),
    )


def _smtp(path, table, here: Path) -> Smtp:
    if "password" in table:
        raise ConfigFileError(
            path,
            "smtp.password",
            "is never written in the deployment file",
            "put the password in a file of its own (chmod 600) and name it in password_file",
        )
    check_known(
        path,
        "smtp",
        table,
        {"host", "port", "from_addr", "starttls", "ssl", "username", "password_file", "timeout"},
    )
    host = _text(path, "smtp.host", table.get("host"), required=True)
    if any(c in host for c in "/: @") or not host.strip():
        raise ConfigFileError(
            path, "smtp.host", f"{host!r} is not a server's name", 'write e.g. "smtp.example.org"'
        )
    ssl = check_bool(path, "smtp.ssl", table.get("ssl", False))
    starttls = check_bool(path, "smtp.starttls", table.get("starttls", not ssl))
    if ssl and starttls:
        raise ConfigFileError(
            path,
            "smtp.starttls",
            "is true together with ssl: a connection is TLS from the start (ssl, port 465) "
            "or upgraded (starttls, port 587), not both",
            "keep one of them",
        )
    username = _text(path, "smtp.username", table.get("username"))
    password_file = None
    if username or "password_file" in table:
        if not username:
            raise ConfigFileError(
                path, "smtp.username", "is missing although password_file is set", "set username"
            )
        if not (ssl or starttls):
            raise ConfigFileError(
                path,
                "smtp.username",
                "is set on a connection without TLS, which would send the password in clear",
                "set starttls = true (or ssl = true)",
            )
        password_file = _private(path, "smtp.password_file", table.get("password_file"), here)
    default_port = 465 if ssl else 587 if starttls else 25
    return Smtp(
        host,
        check_int(path, "smtp.port", table.get("port", default_port), 1, 65535),
        _address(path, "smtp.from_addr", table.get("from_addr")),
        starttls,
        ssl,
        username,
        password_file,
        check_duration(path, "smtp.timeout", table.get("timeout", "30 s"), 1, 3600),
    )


def _address(path, key, value) -> str:
    text = _text(path, key, value, required=True)
    _, addr = parseaddr(text)
    local, at, domain = addr.rpartition("@")
    if not (local and at and "." in domain) or any(c in text for c in "\r\n"):
        raise ConfigFileError(
            path,
            key,
            f"{text!r} is not an e-mail address",
            'write e.g. "slicehub@example.org" or "Slicehub <slicehub@example.org>"',
        )
    return text


def _private(path, key, value, here: Path) -> Path:
    """A file holding a secret: readable by Slicehub, by nobody else (mode 0600 or 0400)."""
    file = _readable(path, key, value, here)
    mode = file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigFileError(
            path, key, f"{file} may be read by others (mode {mode:o})", f"chmod 600 {file}"
        )
    return file


def _scheme(path, table) -> SchemeRoles:
    check_known(
        path, "scheme", table, {"secretariat", "secretariat_group", "committee", "committee_group"}
    )
    return SchemeRoles(
        _texts(path, "scheme.secretariat", table.get("secretariat")),
        _text(path, "scheme.secretariat_group", table.get("secretariat_group")),
        _texts(path, "scheme.committee", table.get("committee")),
        _text(path, "scheme.committee_group", table.get("committee_group")),
    )

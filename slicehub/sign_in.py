"""How people sign in, from the deployment file's [sign_in]: the ecosystem's authenticators,
configured through their own traits, and one post-auth hook for what they do not do alike.

- pam: JupyterHub's PAMAuthenticator (a lab server whose users have Unix accounts);
- ldap: jupyterhub-ldapauthenticator (a university directory);
- oidc: oauthenticator's GenericOAuthenticator (a centre's single sign-on);
- native: jupyterhub-nativeauthenticator (sign-up, approved by staff, for a small lab), through
  `SignUpAuthenticator`, its one hook adapted to JupyterHub 6 (see there);
- custom: any Authenticator class the deployment names, configured in jupyterhub_config.d.

The hook (`Directory`) decides two things for every method: which groups a user is in (hub
groups, kept in step at each sign-in: a project can name one, `slicehub admin`), and whether
they are staff (named in `staff`, or in `staff_group`). Staff are the hub's admins and hold the
quota service's staff scopes (`slicehub.hub`). Nothing here is an authenticator of our own.
"""

from __future__ import annotations

import grp
import os
import pwd

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler

from .deployment import SignIn

AUTHENTICATORS = {
    "pam": "jupyterhub.auth.PAMAuthenticator",
    "ldap": "ldapauthenticator.LDAPAuthenticator",
    "oidc": "oauthenticator.generic.GenericOAuthenticator",
    "native": "slicehub.sign_in.SignUpAuthenticator",
}
# methods whose directory says which groups a user is in
GROUP_METHODS = ("pam", "ldap", "oidc")


def group_name(group: str) -> str:
    """The hub's name for a directory group: an LDAP DN's first value ("cn=lab,ou=groups,..."
    is "lab"), any other name as it is."""
    first = group.split(",", 1)[0]
    attribute, sep, value = first.partition("=")
    return value.strip() if sep and attribute.strip().isalpha() else group


def unix_groups(username: str) -> list[str]:
    """The Unix groups of a local account (none for an unknown one)."""
    try:
        account = pwd.getpwnam(username)
    except KeyError:
        return []
    names = []
    for gid in os.getgrouplist(username, account.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return sorted(set(names))


class _NoTimer:
    def start(self):
        return self

    def stop(self, send=True):
        pass


class _NoStatsd:
    def timer(self, name):
        return _NoTimer()


class SignUpLoginHandler(NativeLoginHandler):
    """nativeauthenticator 1.3.0's login page (its newest release) times each login with the
    hub's statsd client, which JupyterHub 6 no longer has (jupyterhub#5407): every login
    answered 500. The timer is a no-op here; everything else is theirs."""

    statsd = _NoStatsd()


class SignUpAuthenticator(NativeAuthenticator):
    """NativeAuthenticator with its login handler swapped through its own hook (get_handlers)."""

    def get_handlers(self, app):
        return [
            (route, SignUpLoginHandler if handler is NativeLoginHandler else handler)
            for route, handler in super().get_handlers(app)
        ]


class Directory:
    """The post-auth hook: a user's groups and whether they are staff. Callable as JupyterHub's
    `Authenticator.post_auth_hook(authenticator, handler, authentication)`."""

    def __init__(self, sign_in: SignIn):
        self.method = sign_in.method
        self.staff = set(sign_in.staff)
        self.staff_group = group_name(sign_in.staff_group) if sign_in.staff_group else ""

    def groups(self, authentication: dict) -> list[str] | None:
        """The user's groups by the directory (None: this method does not say)."""
        if self.method == "pam":
            return unix_groups(authentication["name"])
        if self.method == "ldap":
            found = (authentication.get("auth_state") or {}).get("ldap_groups") or []
            return sorted({group_name(g) for g in found})
        if self.method == "oidc":  # GenericOAuthenticator has set them from the groups claim
            return authentication.get("groups")
        return None

    def is_staff(self, name: str, groups: list[str] | None) -> bool:
        return name in self.staff or bool(self.staff_group and self.staff_group in (groups or ()))

    def __call__(self, authenticator, handler, authentication: dict) -> dict:
        groups = self.groups(authentication)
        if groups is not None:
            authentication["groups"] = groups
        if self.is_staff(authentication["name"], groups):
            authentication["admin"] = True
        return authentication


def configure_sign_in(c, sign_in: SignIn, public_url: str, role_groups: tuple[str, ...] = ()):
    """Set JupyterHub's authenticator and its traits for `sign_in`; `role_groups` are other
    directory groups the deployment gives a role (the scheme's secretariat and committee),
    looked up and let in as the staff group is."""
    method = sign_in.method
    c.JupyterHub.authenticator_class = sign_in.authenticator_class or AUTHENTICATORS[method]
    c.Authenticator.admin_users = set(sign_in.staff)
    c.Authenticator.allowed_users = set(sign_in.allowed_users)
    c.Authenticator.allow_all = sign_in.allow_all
    c.Authenticator.manage_groups = method in GROUP_METHODS
    c.Authenticator.post_auth_hook = Directory(sign_in)
    if method == "ldap":
        ldap = sign_in.ldap
        c.LDAPAuthenticator.server_address = ldap.server
        c.LDAPAuthenticator.server_port = ldap.port
        c.LDAPAuthenticator.tls_strategy = ldap.tls
        c.LDAPAuthenticator.bind_dn_template = list(ldap.bind_dn_templates)
        # groups are looked up only among these: who may sign in (unless allow_all), roles
        groups = list(ldap.groups)
        groups += [g for g in (sign_in.staff_group, *role_groups) if g and "=" in g]
        c.LDAPAuthenticator.allowed_groups = sorted(set(groups))
    elif method == "oidc":
        oidc = sign_in.oidc
        generic = c.GenericOAuthenticator
        generic.client_id = oidc.client_id
        generic.client_secret = oidc.client_secret_file.read_text().strip()
        generic.authorize_url = oidc.authorize_url
        generic.token_url = oidc.token_url
        generic.userdata_url = oidc.userdata_url
        generic.username_claim = oidc.username_claim
        generic.scope = list(oidc.scopes)
        generic.oauth_callback_url = public_url.rstrip("/") + "/hub/oauth_callback"
        generic.auth_state_groups_key = f"oauth_user.{oidc.groups_claim}"
        if sign_in.staff_group:
            generic.admin_groups = {sign_in.staff_group}
    elif method == "native":
        native = sign_in.native
        c.Authenticator.allow_all = True  # staff approve each sign-up: that is the gate
        c.NativeAuthenticator.open_signup = native.open_signup
        c.NativeAuthenticator.minimum_password_length = native.minimum_password_length
        c.NativeAuthenticator.check_common_password = True

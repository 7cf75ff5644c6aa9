"""The test directory that scripts/ldap.sh starts answers as a university's would, and the
ecosystem's LDAPAuthenticator, built directly (no Slicehub code), signs its users in against it
and refuses the rest. The hub-level sign-in tests build on this directory.

LDAPAuthenticator's ``authenticate`` only binds and lists the allowed groups the user is in; the
refusal of a user in no allowed group is its ``check_allowed``, which the hub reaches through
``get_authenticated_user``. The tests call both, as the hub's login handler would.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ldapdir import LdapDirectory

with warnings.catch_warnings():
    # ldap3 2.9.1 imports names pyasn1 >= 0.6.1 deprecates; the suite turns warnings into errors
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    import ldap3
    from ldapauthenticator import LDAPAuthenticator


# LDAPAuthenticator 2.0.2 never unbinds the connection a login opens: its socket is closed by
# the garbage collector, with a ResourceWarning (silent in a hub, an error in this suite).
LEAVES_ITS_SOCKETS = pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")


@contextmanager
def connection(
    directory: LdapDirectory, user: str | None = None, password: str | None = None
) -> Iterator[ldap3.Connection]:
    conn = ldap3.Connection(
        ldap3.Server(directory.host, port=directory.port, connect_timeout=5),
        user=user,
        password=password,
        receive_timeout=5,
    )
    try:
        yield conn
    finally:
        conn.unbind()


def test_a_user_binds_with_the_right_password_and_not_with_a_wrong_one(
    ldap_directory: LdapDirectory,
) -> None:
    assert ldap_directory.users, "the directory has no users"
    for name, password in ldap_directory.users.items():
        with connection(ldap_directory, ldap_directory.user_dn(name), password) as conn:
            assert conn.bind(), f"{name}: {conn.result}"
            assert conn.extend.standard.who_am_i() == f"dn:{ldap_directory.user_dn(name)}"

    ann = "ldap-ann"
    for dn, password in [
        (ldap_directory.user_dn(ann), "not-" + ldap_directory.users[ann]),
        (ldap_directory.user_dn("ldap-nobody"), ldap_directory.users[ann]),
    ]:
        with connection(ldap_directory, dn, password) as conn:
            assert not conn.bind()
            assert conn.result["description"] == "invalidCredentials"


def test_the_groups_list_their_members_and_nobody_reads_a_password(
    ldap_directory: LdapDirectory,
) -> None:
    d = ldap_directory
    with connection(d) as conn:  # anonymous: the ACL lets it read everything but passwords
        assert conn.bind()
        conn.search(d.groups_dn, "(objectClass=groupOfNames)", attributes=["member"])
        members = {entry.entry_dn: sorted(entry.member.values) for entry in conn.entries}
        conn.search(d.people_dn, "(objectClass=inetOrgPerson)", attributes=["uid", "userPassword"])
        people = conn.entries
    assert members == {
        d.staff_group_dn: [d.user_dn(name) for name in d.staff_members],
        d.project_group_dn: [d.user_dn(name) for name in d.project_members],
    }
    assert d.staff_members == ("ldap-ben",)
    assert d.project_members == ("ldap-ann",)
    assert d.in_no_group == ("ldap-cat",)
    assert sorted(str(entry.uid) for entry in people) == sorted(d.users)
    assert all(not entry.userPassword.values for entry in people)


def ldap_authenticator(directory: LdapDirectory, allowed_groups: list[str]) -> LDAPAuthenticator:
    return LDAPAuthenticator(
        server_address=directory.host,
        server_port=directory.port,
        bind_dn_template=directory.bind_dn_template,
        allowed_groups=allowed_groups,
        tls_strategy="insecure",  # the test directory speaks plain LDAP on loopback only
        enable_auth_state=True,
    )


@pytest.fixture
def authenticator(ldap_directory: LdapDirectory) -> Iterator[LDAPAuthenticator]:
    yield ldap_authenticator(
        ldap_directory, [ldap_directory.staff_group_dn, ldap_directory.project_group_dn]
    )
    gc.collect()  # its connections' sockets closed now, under the test's warning filter


@LEAVES_ITS_SOCKETS
async def test_ldapauthenticator_signs_in_a_group_member_with_the_right_password(
    ldap_directory: LdapDirectory, authenticator: LDAPAuthenticator
) -> None:
    d = ldap_directory
    for name, group in [("ldap-ben", d.staff_group_dn), ("ldap-ann", d.project_group_dn)]:
        login = {"username": name, "password": d.users[name]}
        found = await authenticator.authenticate(None, login)
        assert found["name"] == name
        assert found["auth_state"]["ldap_groups"] == [group]
        user = await authenticator.get_authenticated_user(None, login)
        assert user is not None
        assert user["name"] == name
        assert user["auth_state"]["ldap_groups"] == [group]
        assert user["admin"] is None  # no say: it has no admin-groups setting (a hook's job)


@LEAVES_ITS_SOCKETS
async def test_ldapauthenticator_refuses_a_wrong_password_and_an_unknown_user(
    ldap_directory: LdapDirectory, authenticator: LDAPAuthenticator
) -> None:
    password = ldap_directory.users["ldap-ann"]
    for login in [
        {"username": "ldap-ann", "password": "not-" + password},
        {"username": "ldap-ann", "password": ""},
        {"username": "ldap-nobody", "password": password},
    ]:
        assert await authenticator.authenticate(None, login) is None
        assert await authenticator.get_authenticated_user(None, login) is None


@LEAVES_ITS_SOCKETS
async def test_ldapauthenticator_refuses_a_user_in_no_allowed_group(
    ldap_directory: LdapDirectory, authenticator: LDAPAuthenticator
) -> None:
    d = ldap_directory
    cat = {"username": "ldap-cat", "password": d.users["ldap-cat"]}
    bound = await authenticator.authenticate(None, cat)  # the password is right...
    assert bound["auth_state"]["ldap_groups"] == []
    assert await authenticator.get_authenticated_user(None, cat) is None  # ...the groups refuse

    # Only the listed groups count: with the staff group alone, a project member is refused.
    staff_only = ldap_authenticator(d, [d.staff_group_dn])
    ann = {"username": "ldap-ann", "password": d.users["ldap-ann"]}
    assert await staff_only.get_authenticated_user(None, ann) is None

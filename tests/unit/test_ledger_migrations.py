"""The ledger's migrations 0004 (a project's member group), 0005 (parking), 0006 (the outbox),
0007 (the scheme's workflow) and 0008 (pre-warming) on a ledger with history: down to 0003 and
up again, every row of every table is kept, and after the upgrade projects name no group
(membership by rows alone, as before), have the site's parking and their scheme's rate.
On SQLite here; the same on a real PostgreSQL in
tests/integration/test_ledger_postgres.py."""

from alembic import command
from sqlalchemy import MetaData, inspect, select

from slicehub.db import alembic_config
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import Project, Scheme
from slicehub.quota.reader import LedgerReader
from slicehub.quota.store import MIGRATIONS, VERSION_TABLE
from tests.unit.rules_ledger import T0, H, build, project


def migrate(lg: Ledger, revision: str, down: bool = False) -> None:
    """Up (or `down`) to `revision`, on the ledger's engine, as `Ledger.upgrade` goes up."""
    url = lg.engine.url.render_as_string(hide_password=False)
    with lg.engine.begin() as conn:
        cfg = alembic_config(MIGRATIONS, url, VERSION_TABLE)
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def current(lg: Ledger) -> str:
    with lg.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar_one()


HEAD = "0008"
# made after 0003: the outbox (0006), the scheme's workflow (0007), pre-warming (0008)
NEW_TABLES = {
    "outbox",
    "class_prewarm",
    "applications",
    "application_members",
    "application_requests",
    "reviewer_assignments",
    "scores",
    "decisions",
    "change_requests",
    "progress_reports",
}
# the columns 0004, 0005 and 0007 add, by table: what a ledger at 0003 cannot have
NEW_COLUMNS = {
    ("schemes", "criteria"),
    ("schemes", "max_rate_bp"),
    ("schemes", "report_period_months"),
    ("projects", "subsidy_rate_bp"),
}
NEW_COLUMNS |= {
    (table, name)
    for table, names in (
        ("projects", ("member_group", "idle_minutes", "idle_warning_minutes", "parking_opt_out")),
        (
            "sessions",
            (
                "idle_since",
                "idle_warned_at",
                "idle_park_at",
                "idle_seconds",
                "idle_list_cents",
                "idle_subsidy_cents",
                "prewarm_window_id",
                "handed_to",
            ),
        ),
    )
    for name in names
}


def rows(lg: Ledger) -> dict:
    """Every row of every ledger table older than 0004, without the columns 0004, 0005, 0007 and
    0008 add, in order."""
    meta = MetaData()
    meta.reflect(lg.engine)
    out = {}
    with lg.engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            if name in (VERSION_TABLE, *NEW_TABLES):
                continue
            columns = [c for c in table.c if (name, c.name) not in NEW_COLUMNS]
            found = conn.execute(select(*columns)).all()
            out[name] = sorted((tuple(r) for r in found), key=repr)
    return out


def a_ledger_with_history(lg: Ledger) -> None:
    project(lg, "lab", member_cap_cents=30_00)
    lg.add_member("staff", "lab", "ann", T0, role="pi", cap_cents=50_00, name="Ann", email="a@x.y")
    lg.add_member("staff", "lab", "bo", T0)
    done = lg.open_session("lab", "ann", "", "h100.1g.10gb", 2 * H, T0)
    lg.open_session("lab", "bo", "nb", "h100.3g.40gb", H, T0 + H / 2)
    lg.meter(T0 + H)
    lg.extend(done.id, "ann", H, T0 + H)
    lg.close_session(done.id, T0 + H + H / 4)


def check_0004_down_and_up_keeps_everything(lg: Ledger) -> None:
    a_ledger_with_history(lg)
    assert current(lg) == HEAD
    before = rows(lg)
    assert sum(len(v) for v in before.values()) > 15

    migrate(lg, "0003", down=True)
    assert current(lg) == "0003"
    found = {
        (t, c["name"])
        for t in ("schemes", "projects", "sessions")
        for c in inspect(lg.engine).get_columns(t)
    }
    assert not found & NEW_COLUMNS
    assert not set(inspect(lg.engine).get_table_names()) & NEW_TABLES
    assert rows(lg) == before

    lg.upgrade()  # as the quota service's start-up does
    assert current(lg) == HEAD
    assert rows(lg) == before
    with lg.session() as db:
        assert db.execute(
            select(
                Project.member_group,
                Project.idle_minutes,
                Project.parking_opt_out,
                Project.subsidy_rate_bp,
            )
        ).all() == [(None, None, False, None)]
        assert db.execute(
            select(Scheme.criteria, Scheme.max_rate_bp, Scheme.report_period_months)
        ).all() == [("[]", 9000, 3)]
    # the upgraded ledger goes on: a row member holds as before, a group is named and used
    lg.open_session("lab", "ann", "again", "h100.1g.10gb", H, T0 + 2 * H)
    lg.set_member_group("staff", "lab", "proj-lab", T0 + 2 * H)
    s = lg.open_session("lab", "cy", "", "h100.1g.10gb", H, T0 + 2 * H, {"proj-lab"})
    assert s.via == "group:proj-lab"


def test_0004_down_to_0003_and_up_again_keeps_the_ledger(tmp_path):
    lg = build(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        check_0004_down_and_up_keeps_everything(lg)
    finally:
        lg.dispose()


def test_a_ledger_made_at_0003_upgrades_with_rows_only(tmp_path):
    """A ledger that never saw 0004: made at 0003, written there (plain SQL: the models know the
    new column), then upgraded by the service's start-up step."""
    lg = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        migrate(lg, "0003")
        with lg.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO schemes (id, name, subsidy_rate_bp, fund_cents, created_at) "
                "VALUES (1, 's', 7000, 1000000, '2026-11-02 01:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO projects (id, slug, name, organisation, pi, scheme_id, valid_from, "
                "valid_until, allowed_slice_types, max_concurrent_sessions, policy, "
                "credit_limit_cents, member_cap_cents, is_course, created_at) VALUES (1, 'old', "
                "'Old', 'U', 'pi', 1, '2026-11-01 00:00:00', '2027-11-01 00:00:00', '[\"*\"]', 3, "
                "'stop', 0, NULL, 0, '2026-11-01 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO members (project_id, username, role, cap_cents) "
                "VALUES (1, 'ann', 'member', NULL)"
            )
        before = rows(lg)
        lg.upgrade()
        assert rows(lg) == before and current(lg) == HEAD
        with lg.session() as db:
            old = db.scalar(select(Project))
        assert (old.slug, old.member_group, old.parking_opt_out) == ("old", None, False)
        reader = LedgerReader(lg)
        assert [p["project"] for p in reader.projects("ann", T0, None, {"old"})] == ["old"]
        assert reader.projects("bo", T0, None, {"old"}) == []  # a group of its name: nobody
    finally:
        lg.dispose()

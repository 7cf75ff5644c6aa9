"""`slicehub admin …`, `slicehub statement`, `slicehub report`, run in-process on a temporary
SQLite ledger (and once on a real PostgreSQL).

Every verb's happy path writes what it says; every bad input exits 2 with one sentence on
stderr and leaves every table exactly as it was (a dump of all tables before and after);
a course is written all or nothing, even when the ledger fails half-way through it.
"""

import csv
import io
import json
import os
import pwd
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select

from slicehub.cli import main
from slicehub.common import clock
from slicehub.quota import cli as quota_cli
from slicehub.quota.errors import LedgerError
from slicehub.quota.ledger import Ledger
from slicehub.quota.models import AuditEntry, ClassWindow, Grant, Member, Price, Project, Scheme
from slicehub.quota.statement import CENTRE_TZ

NOW = datetime(2026, 10, 15, 2, 0, tzinfo=UTC)  # 10:00 HKT; the clock the CLI reads
HKT = CENTRE_TZ


@dataclass
class Result:
    status: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(clock, "utcnow", lambda: NOW)


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


CLASSROOM_SITE = Path(__file__).resolve().parents[1] / "fixtures" / "sites" / "classroom-site.toml"


@pytest.fixture
def slicehub(capsys, db, monkeypatch):
    """`slicehub("admin grant add …", *more)` runs the command (split like a shell would) in
    this process against `db`, unless it names its own --db; the deployment's site is one with
    room for a class (28 h100.1g.10gb slices), which class windows are checked against."""
    monkeypatch.setenv("SLICEHUB_SITE", str(CLASSROOM_SITE))

    def run(command: str, *more: str) -> Result:
        argv = [*shlex.split(command), *more]
        if "--db" not in argv and "--help" not in argv:
            argv += ["--db", db]
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
        out = capsys.readouterr()
        return Result(status, out.out, out.err)

    return run


def ok(result: Result) -> Result:
    assert result.status == 0, result.err
    assert result.err == "" or result.err.startswith("Wrote ")
    return result


def dump(url: str) -> dict:
    """Every row of every table, in a stable order."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted((tuple(r) for r in conn.execute(table.select())), key=repr)
                for name, table in sorted(meta.tables.items())
            }
    finally:
        engine.dispose()


def write_roster(tmp_path, text: str | bytes, name="roster.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def base(slicehub):
    """A scheme, two prices, a project with a grant and a member."""
    ok(slicehub("admin scheme add hk-ai --rate 70% --fund 1,000,000.00"))
    ok(slicehub("admin price set h100.1g.10gb --per-hour 16.50 --from 2026-11-01 --actor staff"))
    ok(slicehub("admin price set h100.3g.40gb --per-hour HK$45 --from 2026-11-01T00:00+08:00"))
    ok(
        slicehub(
            "admin project add ai-lab --scheme hk-ai --name 'AI Lab' --org HKU --pi dr-chan"
            " --from 2026-11-01 --until 2027-10-31 --types h100.1g.10gb,h100.3g.40gb"
            " --max-sessions 4 --policy full_price --credit-limit 500.00 --member-cap 200.00"
        )
    )
    ok(
        slicehub(
            "admin grant add ai-lab --amount 50000.00 --from 2026-11-01 --until 2027-10-31"
            " --note 'first year'"
        )
    )
    ok(slicehub("admin member add ai-lab alice --role pi --cap 100"))


COURSE = (
    "admin course add ml101 --scheme hk-ai --name 'Machine learning 101' --org HKUST"
    " --pi dr-wong --from 2026-11-01 --until 2026-12-31 --student-cap 50.00"
    " --slice-type h100.1g.10gb --window 2026-11-24T09:00+08:00/2026-11-24T12:00+08:00"
    " --window 2026-12-01T01:00Z/2026-12-01T04:00Z"
)

ROSTER = "username,name,email\nchan01,Chan Tai Man,chan@example.edu\nLee02,Lee,\n\nwong03,,\n"


# -- happy paths --------------------------------------------------------------------------


def test_help_lists_the_ledger_verbs(slicehub):
    r = slicehub("--help")
    assert r.status == 0
    for verb in ("admin", "statement", "report"):
        assert verb in r.out
    r = slicehub("admin course add --help")
    assert "A plain date means Hong Kong time (UTC+08:00)" in " ".join(r.out.split())
    assert "--student-cap" in r.out and "--window" in r.out


def test_scheme_project_grant_member_price(slicehub, db):
    base(slicehub)
    ledger = Ledger(db)
    with ledger.session() as s:
        scheme = s.scalar(select(Scheme))
        assert (scheme.name, scheme.subsidy_rate_bp, scheme.fund_cents) == ("hk-ai", 7000, 10**8)
        p = s.scalar(select(Project))
        assert p.valid_from == datetime(2026, 11, 1, tzinfo=HKT)
        assert p.valid_until == datetime(2027, 11, 1, tzinfo=HKT)  # through 31 October
        assert json.loads(p.allowed_slice_types) == ["h100.1g.10gb", "h100.3g.40gb"]
        assert (p.policy, p.credit_limit_cents, p.member_cap_cents) == (
            "full_price",
            500_00,
            200_00,
        )
        assert (p.max_concurrent_sessions, p.is_course) == (4, False)
        g = s.scalar(select(Grant))
        assert (g.amount_cents, g.note) == (50_000_00, "first year")
        m = s.scalar(select(Member))
        assert (m.username, m.role, m.cap_cents) == ("alice", "pi", 100_00)
        prices = s.execute(select(Price.slice_type, Price.cents_per_hour)).all()
        assert sorted(prices) == [("h100.1g.10gb", 1650), ("h100.3g.40gb", 4500)]
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    ledger.dispose()
    actions = "scheme.add price.set price.set project.add grant.add member.add"
    assert [a.action for a in audit] == actions.split()
    assert audit[0].actor == pwd.getpwuid(os.getuid()).pw_name  # default: the Unix user
    assert audit[1].actor == "staff"


def test_rates_and_money_in_the_other_spellings(slicehub, db):
    ok(slicehub("admin scheme add a --rate 0.7 --fund HK$1,234.5"))
    ok(slicehub("admin scheme add b --rate 62.5% --fund 0"))
    ledger = Ledger(db)
    with ledger.session() as s:
        got = s.execute(select(Scheme.name, Scheme.subsidy_rate_bp, Scheme.fund_cents)).all()
    ledger.dispose()
    assert sorted(got) == [("a", 7000, 123450), ("b", 6250, 0)]


def test_member_names_are_lowercased_as_the_hub_does(slicehub, db):
    base(slicehub)
    r = ok(slicehub("admin member add ai-lab Bob.Li"))
    assert "Added bob.li to ai-lab as member." in r.out


def test_a_projects_member_group_set_changed_and_cleared(slicehub, db):
    base(slicehub)
    r = ok(
        slicehub(
            "admin project add vision --scheme hk-ai --name Vision --org HKU --pi dr-lee"
            " --from 2026-11-01 --until 2027-10-31 --types '*' --max-sessions 3 --policy stop"
            " --group proj-vision"
        )
    )
    assert "the members of hub group proj-vision are its members too." in r.out
    r = ok(slicehub("admin project group vision Proj.Vision_2 --actor ops"))
    assert r.out == (
        "The members of hub group Proj.Vision_2 are members of vision now (it was proj-vision), "
        "with the project's member cap; its member rows stay as they are.\n"
    )
    r = ok(slicehub("admin project group ai-lab lab-members"))
    assert "members of ai-lab now, with the project's member cap" in r.out
    r = ok(slicehub("admin balance ai-lab"))
    assert "  members: by row, and the members of hub group lab-members\n" in r.out
    r = ok(slicehub("admin project group vision --clear"))
    assert (
        r.out
        == "vision takes members from no group now (it was Proj.Vision_2); its member rows stay.\n"
    )
    assert "members:" not in ok(slicehub("admin balance vision")).out
    ledger = Ledger(db)
    with ledger.session() as s:
        groups = dict(s.execute(select(Project.slug, Project.member_group)).all())
        audit = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    ledger.dispose()
    assert groups == {"ai-lab": "lab-members", "vision": None}
    assert json.loads(audit[-4].detail)["member_group"] == "proj-vision"  # project.add
    changes = [(a.actor, a.subject, json.loads(a.detail)) for a in audit[-3:]]
    assert changes[0] == (
        "ops",
        "vision",
        {"member_group": "Proj.Vision_2", "before": "proj-vision"},
    )
    assert changes[2][1:] == ("vision", {"member_group": None, "before": "Proj.Vision_2"})
    assert [a.action for a in audit[-3:]] == ["project.member_group"] * 3


def test_a_course_takes_no_member_group(slicehub, db, tmp_path):
    base(slicehub)
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER)))
    before = dump(db)
    check_refused(
        slicehub("admin project group ml101 cs-students"),
        "ml101 is a course: its students come from its roster",
    )
    assert dump(db) == before


def test_course_from_a_roster(slicehub, db, tmp_path):
    base(slicehub)
    roster = write_roster(tmp_path, b"\xef\xbb\xbf" + ROSTER.encode())
    r = ok(slicehub(COURSE, "--roster", roster, "--grant", "5000"))
    assert "3 students on h100.1g.10gb, cap HK$50.00 each, 2 class window(s)" in r.out
    ledger = Ledger(db)
    with ledger.session() as s:
        p = s.scalar(select(Project).where(Project.slug == "ml101"))
        assert p.is_course and json.loads(p.allowed_slice_types) == ["h100.1g.10gb"]
        assert (p.member_cap_cents, p.max_concurrent_sessions, p.policy) == (50_00, 3, "stop")
        students = s.execute(
            select(Member.username, Member.role, Member.name, Member.email).where(
                Member.project_id == p.id
            )
        ).all()
        assert sorted(students) == [  # what the roster says of each student is kept
            ("chan01", "student", "Chan Tai Man", "chan@example.edu"),
            ("lee02", "student", "Lee", ""),
            ("wong03", "student", "", ""),
        ]
        windows = s.execute(
            select(ClassWindow.starts_at, ClassWindow.ends_at).where(ClassWindow.project_id == p.id)
        ).all()
        assert sorted(windows) == [
            (datetime(2026, 11, 24, 1, tzinfo=UTC), datetime(2026, 11, 24, 4, tzinfo=UTC)),
            (datetime(2026, 12, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, 4, tzinfo=UTC)),
        ]
        assert s.scalar(select(Grant.amount_cents).where(Grant.project_id == p.id)) == 5000_00
    # a student can start inside a class window, and only there
    inside = datetime(2026, 11, 24, 2, tzinfo=UTC)
    ledger.open_session("ml101", "chan01", "", "h100.1g.10gb", timedelta(hours=1), inside)
    between = datetime(2026, 11, 25, 2, tzinfo=UTC)
    with pytest.raises(LedgerError, match="outside its class windows"):
        ledger.open_session("ml101", "lee02", "", "h100.1g.10gb", timedelta(hours=1), between)
    ledger.dispose()


def test_course_roster_adds_new_students_and_leaves_members_alone(slicehub, db, tmp_path):
    base(slicehub)
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER), "--max-sessions", "10"))
    more = write_roster(tmp_path, "username\nchan01\nng04\nho05\n", "more.csv")
    r = ok(slicehub("admin course roster ml101", more))
    assert "Added 2 student(s) to ml101; 1 already member(s)" in r.out
    assert "The course has 5 students and allows 10 sessions at once." in r.out
    r = ok(slicehub("admin course window ml101 --window 2026-12-08/2026-12-08"))
    ledger = Ledger(db)
    with ledger.session() as s:
        pid = s.scalar(select(Project.id).where(Project.slug == "ml101"))
        n = s.scalars(select(Member.username).where(Member.project_id == pid)).all()
        w = s.execute(
            select(ClassWindow.starts_at, ClassWindow.ends_at).where(ClassWindow.project_id == pid)
        ).all()
    ledger.dispose()
    assert sorted(n) == ["chan01", "ho05", "lee02", "ng04", "wong03"]
    assert (datetime(2026, 12, 8, tzinfo=HKT), datetime(2026, 12, 9, tzinfo=HKT)) in w


def test_projects_balance_and_audit(slicehub, db, monkeypatch):
    base(slicehub)
    r = ok(slicehub("admin projects"))
    assert "HK$0.00" in r.out  # in October the grant is not in force yet
    monkeypatch.setattr(clock, "utcnow", lambda: datetime(2026, 11, 2, tzinfo=UTC))
    r = ok(slicehub("admin projects"))
    assert "ai-lab" in r.out and "HK$50,000.00" in r.out and "2026-11-01..2027-11-01" in r.out
    r = ok(slicehub("admin balance ai-lab --member alice"))
    assert "subsidy left" in r.out and "HK$50,000.00" in r.out
    assert "credit limit" in r.out and "HK$500.00" in r.out
    assert "alice (pi): HK$0.00 of subsidy used or held; cap HK$100.00" in r.out
    r = ok(slicehub("admin audit --limit 2"))
    lines = r.out.strip().splitlines()
    assert len(lines) == 2 and "member.add" in lines[0] and "grant.add" in lines[1]


def spend(db):
    """Two sessions in November through the ledger itself, as the quota service would."""
    ledger = Ledger(db)
    t = datetime(2026, 11, 3, 2, tzinfo=UTC)
    s = ledger.open_session("ai-lab", "alice", "", "h100.1g.10gb", timedelta(hours=2), t)
    ledger.meter(t + timedelta(minutes=30))
    ledger.close_session(s.id, t + timedelta(hours=1))
    s = ledger.open_session("ai-lab", "alice", "", "h100.3g.40gb", timedelta(hours=1), t)
    ledger.close_session(s.id, t + timedelta(minutes=20))
    ledger.dispose()


def test_statement_and_scheme_report(slicehub, db, tmp_path):
    base(slicehub)
    spend(db)
    r = ok(slicehub("statement --project ai-lab --month 2026-11"))
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [x["session"] for x in rows] == ["1", "2", "total"]
    assert rows[-1]["list_cost_hkd"] == "31.50"  # 1 h at 16.50 + 20 min at 45.00
    assert rows[-1]["subsidy_hkd"] == "22.05" and rows[-1]["copay_hkd"] == "9.45"
    out = tmp_path / "nov.html"
    r = ok(slicehub("statement --project ai-lab --month 2026-11 --format html --out", str(out)))
    page = out.read_text()
    assert "<svg" in page and "HK$31.50" in page and r.out == ""
    r = ok(slicehub("report scheme --scheme hk-ai"))
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert rows[0]["project"] == "ai-lab" and rows[0]["subsidy_disbursed_hkd"] == "22.05"
    r = ok(slicehub("report scheme --format html"))
    assert "Scheme hk-ai" in r.out and "HK$22.05" in r.out


def write_site(tmp_path, name: str, parking: str) -> str:
    """A site file with only a [parking] table (all the parking verb reads of it)."""
    path = tmp_path / name
    path.write_text("[parking]\n" + parking)
    return str(path)


def parking_of(db) -> tuple:
    ledger = Ledger(db)
    with ledger.session() as s:
        p = s.scalar(select(Project).where(Project.slug == "ai-lab"))
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "project.parking")).all()
    ledger.dispose()
    return (p.idle_minutes, p.idle_warning_minutes, p.parking_opt_out), [
        (a.actor, json.loads(a.detail)) for a in audit
    ]


def test_a_projects_own_parking_set_shown_and_reset(slicehub, db, tmp_path):
    base(slicehub)
    site = write_site(tmp_path, "site.toml", 'idle = "30 min"\nwarning = "5 min"\n')
    r = ok(slicehub("admin project parking ai-lab --site", site))
    assert r.out == (
        "ai-lab's parking: the site's.\n"
        "ai-lab's sessions are parked after 30 min idle, with a warning 5 min before (the site "
        "reads every server every 1 min).\n"
    )
    assert parking_of(db) == ((None, None, False), [])  # only shown: nothing written
    r = ok(
        slicehub(
            "admin project parking ai-lab --idle 15 --warning '3 min' --actor ops --site", site
        )
    )
    assert r.out.splitlines() == [
        "ai-lab's parking: idle window 15 min, warning lead 3 min (was: the site's).",
        "ai-lab's sessions are parked after 15 min idle, with a warning 3 min before (the site "
        "reads every server every 1 min).",
    ]
    r = ok(slicehub("admin project parking ai-lab --exempt --site", site))
    assert r.out.splitlines()[1:] == [
        f"The exemption has no effect: the site file {site} does not let projects opt out "
        "([parking] projects_may_opt_out = false).",
        "ai-lab's sessions are parked after 15 min idle, with a warning 3 min before (the site "
        "reads every server every 1 min).",
    ]
    lenient = write_site(tmp_path, "lenient.toml", "projects_may_opt_out = true\n")
    r = ok(slicehub("admin project parking ai-lab --site", lenient))
    assert "no effect" not in r.out
    assert "ai-lab's sessions are never parked; their idle time is still shown." in r.out
    r = ok(slicehub("admin balance ai-lab"))
    assert (
        "  parking: idle window 15 min, warning lead 3 min, exempt where the site lets projects "
        "opt out\n" in r.out
    )
    assert parking_of(db)[0] == (15, 3, True)
    r = ok(slicehub("admin project parking ai-lab --not-exempt --warning 10 --site", lenient))
    assert "parked after 15 min idle, with a warning 10 min before" in r.out
    off = write_site(tmp_path, "off.toml", "enabled = false\n")
    r = ok(slicehub("admin project parking ai-lab --site-default --site", off))
    assert r.out.splitlines() == [
        "ai-lab's parking: the site's (was: idle window 15 min, warning lead 10 min).",
        f"The site parks no session ([parking] enabled = false in {off}); ai-lab's settings "
        "apply once it does.",
    ]
    settings, audit = parking_of(db)
    assert settings == (None, None, False)
    assert audit == [
        ("ops", {"idle_minutes": 15, "warning_minutes": 3, "opt_out": False}),
        (audit[1][0], {"idle_minutes": 15, "warning_minutes": 3, "opt_out": True}),
        (audit[1][0], {"idle_minutes": 15, "warning_minutes": 10, "opt_out": False}),
        (audit[1][0], {"idle_minutes": None, "warning_minutes": None, "opt_out": False}),
    ]
    assert "  parking: the site's\n" in ok(slicehub("admin balance ai-lab")).out


def test_parking_with_a_site_file_that_cannot_be_read_writes_nothing(slicehub, db, tmp_path):
    base(slicehub)
    before = dump(db)
    bad = write_site(tmp_path, "bad.toml", 'idle = "5 min"\nwarning = "5 min"\n')
    for site, words in (("/nonexistent/site.toml", "cannot be read"), (bad, "must be longer")):
        r = slicehub("admin project parking ai-lab --idle 20 --site", site)
        assert r.status == 2 and r.out == "" and words in r.err and site in r.err
    assert dump(db) == before


def test_a_lead_that_does_not_fit_the_projects_own_window_changes_nothing(slicehub, db):
    base(slicehub)
    ok(slicehub("admin project parking ai-lab --idle 10"))
    before = dump(db)
    check_refused(
        slicehub("admin project parking ai-lab --warning 12"),
        "The warning lead (12 min) must be shorter than the idle window (10 min)",
    )
    assert dump(db) == before


def test_default_database_follows_the_hubs_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SLICEHUB_LEDGER_URL", "postgresql+psycopg://x@h/db")
    assert quota_cli.default_db_url() == "postgresql+psycopg://x@h/db"
    monkeypatch.delenv("SLICEHUB_LEDGER_URL")
    monkeypatch.setenv("SLICEHUB_DATA_DIR", str(tmp_path))
    assert quota_cli.default_db_url() == f"sqlite:///{tmp_path / 'ledger.sqlite'}"


# -- bad input: exit 2, one sentence, nothing written ----------------------------------------

PROJECT = "admin project add p2 --scheme hk-ai --name P2 --org HKU --pi x --max-sessions 2"
P2 = PROJECT + " --policy stop --from 2026-11-01 --until 2027-10-31"
GRANT = "admin grant add ai-lab --from 2026-11-01 --until 2027-10-31"
PRICE = "admin price set h100.1g.10gb"
SCHEME = "admin scheme add s2"

BAD = {
    "negative fund": (f"{SCHEME} --rate 70% --fund -5", "negative"),
    "float-y fund": (f"{SCHEME} --rate 70% --fund 1e6", "not an amount"),
    "three decimals": (f"{SCHEME} --rate 70% --fund 1.005", "more than two decimals"),
    "comma as decimal": (f"{GRANT} --amount 1,00", "not an amount"),
    "absurd fund": (f"{SCHEME} --rate 70% --fund 100000000000.01", "absurd"),
    "nan": (f"{GRANT} --amount NaN", "not an amount"),
    "bare rate": (f"{SCHEME} --rate 70 --fund 1", "ambiguous"),
    "rate over 100%": (f"{SCHEME} --rate 101% --fund 1", "outside 0% to 100%"),
    "rate too fine": (f"{SCHEME} --rate 70.001% --fund 1", "finer than"),
    "duplicate scheme": ("admin scheme add hk-ai --rate 70% --fund 1", "exists already"),
    "unknown scheme": (P2.replace("hk-ai", "nope") + " --types '*'", "There is no scheme 'nope'"),
    "duplicate project": (P2.replace("p2", "ai-lab") + " --types '*'", "exists already"),
    "bad slug": (P2.replace("p2", "'AI Lab'") + " --types '*'", "is not a project id"),
    "project ends before it starts": (
        f"{PROJECT} --policy stop --from 2027-01-01 --until 2026-11-01 --types '*'",
        "ends before it starts",
    ),
    "naive time": (
        f"{PROJECT} --policy stop --from 2026-11-01T09:00 --until 2027-10-31 --types '*'",
        "has no UTC offset",
    ),
    "not a date": (
        f"{PROJECT} --policy stop --from 2026-02-30 --until 2027-10-31 --types '*'",
        "is not a date",
    ),
    "unpriced slice type": (f"{P2} --types h100.7g.80gb", "no list price"),
    "star and types": (f"{P2} --types '*,h100.1g.10gb'", "not both"),
    "credit limit with stop": (f"{P2} --types '*' --credit-limit 5", "only with --policy"),
    "zero sessions": (
        P2.replace("--max-sessions 2", "--max-sessions 0") + " --types '*'",
        "concurrent sessions",
    ),
    "negative member cap": (f"{P2} --types '*' --member-cap -1", "negative"),
    "grant to unknown project": (
        GRANT.replace("ai-lab", "nope") + " --amount 5",
        "There is no project 'nope'",
    ),
    "negative grant": (f"{GRANT} --amount -50000.00", "negative"),
    "zero grant": (f"{GRANT} --amount 0.00", "more than zero"),
    "grant ends before it starts": (
        "admin grant add ai-lab --amount 5 --from 2027-01-01 --until 2026-12-01",
        "ends before it starts",
    ),
    "grant without dates": ("admin grant add ai-lab --amount 5", "required: --from, --until"),
    "bad member group": (f"{P2} --types '*' --group 'proj vision'", "is not a group name"),
    "bad member group to set": ("admin project group ai-lab proj/vision", "is not a group name"),
    "too long a member group": (f"admin project group ai-lab {'g' * 101}", "is not a group name"),
    "member group and clear": ("admin project group ai-lab proj-x --clear", "not both"),
    "neither member group nor clear": ("admin project group ai-lab", "or --clear for no group"),
    "member group of unknown project": (
        "admin project group nope proj-x",
        "There is no project 'nope'",
    ),
    "member of unknown project": ("admin member add nope bob", "There is no project 'nope'"),
    "member with a bad e-mail": ("admin member add ai-lab bob --email bob@", "not an e-mail"),
    "member twice": ("admin member add ai-lab ALICE", "already a member"),
    "bad user name": ("admin member add ai-lab 'bob smith'", "may contain only"),
    "bad role": ("admin member add ai-lab bob --role admin", "invalid choice"),
    "price in the past": (f"{PRICE} --per-hour 20 --from 2026-10-01", "in the past"),
    "price without offset": (f"{PRICE} --per-hour 20 --from 2026-12-01T00:00", "no UTC offset"),
    "absurd price": (f"{PRICE} --per-hour 250000 --from 2026-12-01", "absurd"),
    "negative price": (f"{PRICE} --per-hour -16.50 --from 2026-12-01", "negative"),
    "price clash": (f"{PRICE} --per-hour 17 --from 2026-11-01T00:00+08:00", "already has a price"),
    "bad slice type": (
        "admin price set 'H100 1g' --per-hour 1 --from 2026-12-01",
        "is not a slice type name",
    ),
    "balance of unknown project": ("admin balance nope", "There is no project 'nope'"),
    "unknown member": ("admin balance ai-lab --member zed", "zed is not a member of project"),
    "audit limit": ("admin audit --limit 0", "from 1 to 10000"),
    "statement of unknown project": (
        "statement --project nope --month 2026-11",
        "There is no project 'nope'",
    ),
    "statement month": ("statement --project ai-lab --month 2026-13", "is not a month"),
    "statement to a missing folder": (
        "statement --project ai-lab --month 2026-11 --out /nonexistent/x.csv",
        "does not exist",
    ),
    "report of unknown scheme": ("report scheme --scheme nope", "There is no scheme 'nope'"),
    "roster for unknown course": ("admin course roster nope {roster}", "no project 'nope'"),
    "roster for a project": ("admin course roster ai-lab {roster}", "ai-lab is not a course"),
    "window for a project": (
        "admin course window ai-lab --window 2026-12-01/2026-12-01",
        "ai-lab is not a course",
    ),
    "window for unknown course": (
        "admin course window nope --window 2026-12-01/2026-12-01",
        "There is no project 'nope'",
    ),
    "bad database URL": ("admin projects --db 'not a url'", "is not a database URL"),
    "parking window of zero": ("admin project parking ai-lab --idle 0", "from 1 to 1,440 minutes"),
    "parking lead past a day": ("admin project parking ai-lab --warning 1441", "1 to 1,440"),
    "parking window in hours": (
        "admin project parking ai-lab --idle 1h",
        "whole number of minutes",
    ),
    "parking window fraction": ("admin project parking ai-lab --idle 1.5", "whole number"),
    "parking lead not shorter": (
        "admin project parking ai-lab --idle 10 --warning 10",
        "must be shorter than the idle window",
    ),
    "parking site default and more": (
        "admin project parking ai-lab --site-default --exempt",
        "give it alone",
    ),
    "parking exempt and not": (
        "admin project parking ai-lab --exempt --not-exempt",
        "not allowed with argument --exempt",
    ),
    "parking of unknown project": ("admin project parking nope --idle 5", "no project 'nope'"),
}


def check_refused(result: Result, words: str) -> None:
    assert result.status == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert words in lines[0]
    assert lines[0].endswith("."), lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_nothing_is_written(slicehub, db, tmp_path, case):
    base(slicehub)
    roster = write_roster(tmp_path, ROSTER)
    command, words = BAD[case]
    before = dump(db)
    check_refused(slicehub(command.replace("{roster}", shlex.quote(roster))), words)
    assert dump(db) == before


BAD_ROSTERS = {
    "empty file": (b"", "is empty"),
    "header only": (b"username,name,email\n", "no students"),
    "missing header": (b"chan01,Chan\nlee02,Lee\n", "line 1: the header row is missing"),
    "no username column": (b"login,name\nchan01,Chan\n", "no 'username' column"),
    "duplicate username": (b"username\nchan01\nlee02\nCHAN01\n", "line 4: user name 'chan01'"),
    "bad characters": (b"username\nchan01\nlee 02\n", "line 3: user name 'lee 02' may contain"),
    "semicolons": (b"username;name\nchan01;Chan\n", "separated by semicolons"),
    "tabs": (b"username\tname\nchan01\tChan\n", "separated by tabs"),
    "too many rows": (
        b"username\n" + b"".join(b"s%05d\n" % i for i in range(5001)),
        "line 5002: is past the limit of 5000 students",
    ),
    "not UTF-8": (b"username,name\nchan01,Ch\xe2n\n", "line 2: is not UTF-8"),
    "extra fields": (b"username,name\nchan01,Chan,Tai,Man\n", "line 2: has 4 fields"),
    "bad e-mail": (b"username,email\nchan01,chan-at-example\n", "not an e-mail address"),
}


@pytest.mark.parametrize("case", list(BAD_ROSTERS))
def test_malformed_rosters_write_nothing(slicehub, db, tmp_path, case):
    base(slicehub)
    data, words = BAD_ROSTERS[case]
    roster = write_roster(tmp_path, data)
    before = dump(db)
    check_refused(slicehub(COURSE, "--roster", roster), words)
    assert dump(db) == before
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER, "good.csv")))
    before = dump(db)
    check_refused(slicehub("admin course roster ml101", roster), words)
    assert dump(db) == before


BAD_COURSES = {
    "window ends before it starts": (
        ("--window", "2026-11-24T12:00+08:00/2026-11-24T09:00+08:00"),
        "ends before it starts",
    ),
    "window without an end": (("--window", "2026-11-24T09:00+08:00"), "is not START/END"),
    "window outside the dates": (("--window", "2027-02-01/2027-02-01"), "outside the course"),
    "window without offset": (("--window", "2026-11-24T09:00/2026-11-24T12:00"), "no UTC offset"),
    "missing roster file": (("--roster", "/nonexistent/roster.csv"), "no such file"),
    "course exists": (("--slice-type", "h100.3g.40gb"), "exists already"),  # slug reused below
    "unpriced slice type": (("--slice-type", "a100.1g.10gb"), "no list price"),
    "negative student cap": (("--student-cap", "-50"), "negative"),
    "absurd grant": (("--grant", "1000000000000"), "absurd"),
}


@pytest.mark.parametrize("case", list(BAD_COURSES))
def test_bad_courses_write_nothing(slicehub, db, tmp_path, case):
    base(slicehub)
    extra, words = BAD_COURSES[case]
    command = COURSE.replace("ml101", "ai-lab") if case == "course exists" else COURSE
    before = dump(db)
    check_refused(slicehub(command, "--roster", write_roster(tmp_path, ROSTER), *extra), words)
    assert dump(db) == before


def test_refused_input_does_not_even_create_the_database(slicehub, tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    check_refused(slicehub(GRANT + " --amount -5 --db", url), "negative")
    assert not (tmp_path / "new.sqlite").exists()


# -- all or nothing, even when the ledger fails half-way ---------------------------------------


def fail_on_third_member(monkeypatch, exc):
    """Fail while the third member is being written (its audit entry), inside the ledger's
    transaction: the members before it are already in the session."""
    calls = []
    real = Ledger._audit

    def audit(self, db, at, actor, action, subject, **detail):
        if action == "member.add":
            db.flush()  # the members so far really reach the database
            calls.append(subject)
            if len(calls) == 3:
                raise exc
        return real(self, db, at, actor, action, subject, **detail)

    monkeypatch.setattr(Ledger, "_audit", audit)
    return calls


def test_a_course_that_fails_half_way_leaves_nothing(slicehub, db, tmp_path, monkeypatch):
    base(slicehub)
    before = dump(db)
    calls = fail_on_third_member(monkeypatch, LedgerError("The ledger refused (injected).", 409))
    r = slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER), "--grant", "100")
    check_refused(r, "injected")
    assert len(calls) == 3  # project, grant, windows and students were written, then undone
    assert dump(db) == before


def test_a_crash_half_way_through_a_course_leaves_nothing(slicehub, db, tmp_path, monkeypatch):
    base(slicehub)
    before = dump(db)
    fail_on_third_member(monkeypatch, RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):  # a bug is a traceback, not exit 2
        slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER))
    assert dump(db) == before


def test_a_roster_import_that_fails_half_way_leaves_nothing(slicehub, db, tmp_path, monkeypatch):
    base(slicehub)
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, "username\nfirst01\n")))
    before = dump(db)
    fail_on_third_member(monkeypatch, LedgerError("The ledger refused (injected).", 409))
    r = slicehub("admin course roster ml101", write_roster(tmp_path, ROSTER, "r2.csv"))
    check_refused(r, "injected")
    assert dump(db) == before


# -- the same on a real PostgreSQL ---------------------------------------------------------------


def test_on_postgresql(slicehub, pg_url, tmp_path, monkeypatch, capsys):
    def on_pg(command, *more):
        return slicehub(command, *more, "--db", pg_url)

    base(on_pg)
    roster = write_roster(tmp_path, ROSTER)
    before = dump(pg_url)
    check_refused(on_pg(GRANT + " --amount -1"), "negative")
    check_refused(on_pg("admin member add nope bob"), "There is no project")
    check_refused(on_pg(COURSE, "--roster", write_roster(tmp_path, b"", "e.csv")), "is empty")
    with monkeypatch.context() as m:
        fail_on_third_member(m, LedgerError("The ledger refused (injected).", 409))
        check_refused(on_pg(COURSE, "--roster", roster), "injected")
    assert dump(pg_url) == before
    r = ok(on_pg(COURSE, "--roster", roster, "--grant", "5000"))
    assert "3 students" in r.out
    spend(pg_url)
    r = ok(on_pg("statement --project ai-lab --month 2026-11"))
    assert ",31.50,22.05,9.45," in r.out.strip().splitlines()[-1]
    r = ok(on_pg("report scheme"))
    assert "ml101" in r.out and "ai-lab" in r.out
    r = ok(on_pg("admin projects"))
    assert "ml101 (course)" in r.out


def test_a_course_pre_warms_from_the_terminal_and_bad_settings_write_nothing(
    slicehub, db, tmp_path
):
    base(slicehub)
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, ROSTER)))
    out = ok(slicehub("admin course prewarm ml101 --lead 5 --claim 20 --seats 2")).out
    assert "pre-warms h100.1g.10gb servers for 2 students, 5 min before each class window" in out
    assert "paid by ml101" in out and "not claimed 20 min into the window" in out
    before = dump(db)
    for command, words in (
        ("admin course prewarm ml101", "--lead"),
        ("admin course prewarm ml101 --lead 0", "from 1 to 1,440"),
        ("admin course prewarm ml101 --lead 500", "lead is from 1 to 120"),
        ("admin course prewarm ml101 --lead 5 --seats many", "--seats takes a number"),
        ("admin course prewarm ml101 --lead 5 --paid-by nowhere", "no project 'nowhere'"),
        ("admin course prewarm ai-lab --lead 5", "only courses pre-warm"),
        ("admin course prewarm ml101 --off --lead 5", "--off takes no other setting"),
    ):
        result = slicehub(command)
        assert result.status == 2 and words in result.err, (command, result.err)
    assert dump(db) == before
    ok(slicehub("admin course prewarm ml101 --lead 5 --paid-by ai-lab"))
    assert "no longer pre-warms" in ok(slicehub("admin course prewarm ml101 --off")).out


def test_a_class_window_the_site_cannot_hold_is_refused_with_the_numbers(slicehub, db, tmp_path):
    base(slicehub)
    many = "username\n" + "".join(f"s{i:03d}\n" for i in range(40))
    before = dump(db)
    refused = slicehub(COURSE, "--roster", write_roster(tmp_path, many))
    assert refused.status == 2
    assert (
        "Class window 2026-11-24 09:00 to 2026-11-24 12:00 HKT: The class window needs 40 "
        "h100.1g.10gb slices; the site has 28 in all (14 on gpu-node-01, 14 on gpu-node-02)."
    ) in refused.err
    assert dump(db) == before  # nothing of the course was written
    # at most 20 sessions at once fits, and so does a later window of the same course
    ok(slicehub(COURSE, "--roster", write_roster(tmp_path, many), "--max-sessions", "20"))
    ok(slicehub("admin course window ml101 --window 2026-12-02T01:00Z/2026-12-02T02:00Z"))

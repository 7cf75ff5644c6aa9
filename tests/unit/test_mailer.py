"""The mailer (slicehub/quota/scheme/mailer.py) against a real SMTP server (aiosmtpd in its own
process, the `smtp_server` fixture): pending mails go out once, with their headers and UTF-8
body; a server that refuses or is down leaves them pending with the error and the next try, and
they go once it answers; ten failed tries, or a row that can never be a message, fail it; two
mailers at once send each mail once; STARTTLS, TLS from the start and sign-in; no SMTP server
configured keeps the mail queued and says so once; `slicehub doctor` asks the server."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import select, update

from slicehub.common import clock
from slicehub.deployment import Smtp
from slicehub.quota.ledger import Ledger
from slicehub.quota.scheme.mailer import MAX_ATTEMPTS, Mailer, retry_delay
from slicehub.quota.scheme.outbox import FAILED, PENDING, SENT, OutboxMail, enqueue

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
FROM = "Slicehub <slicehub@hub.example.org>"
MIN = timedelta(minutes=1)
CHINESE = "陳博士您好\n\n你的申請已獲批准。\n"


@pytest.fixture
def now(monkeypatch):
    """The mailer's clock: `now.move(delta)`; it starts at T0."""

    class Clock:
        at = T0

        def move(self, delta: timedelta) -> None:
            self.at += delta

    c = Clock()
    monkeypatch.setattr(clock, "utcnow", lambda: c.at)
    return c


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    lg.upgrade()
    yield lg
    lg.dispose()


def smtp_of(server, **kw) -> Smtp:
    spec = dict(host=server.host, port=server.port, from_addr=FROM, starttls=False, timeout_s=5)
    return Smtp(**(spec | kw))


def queue(ledger, *mails, at: datetime = T0) -> list[int]:
    """Queue (to, subject, body) mails as the workflow does; their ids."""
    with ledger.session() as db, db.begin():
        for to, subject, body in mails:
            enqueue(db, at, to, subject, body, related="application:12")
    with ledger.session() as db:
        return list(db.scalars(select(OutboxMail.id).order_by(OutboxMail.id)))


def row(ledger, mail_id: int) -> OutboxMail:
    with ledger.session() as db:
        return db.get(OutboxMail, mail_id)


def test_pending_mails_go_out_once_with_their_headers_and_utf8_body(ledger, smtp_server, now):
    ids = queue(
        ledger,
        ("ann@uni.example.edu", "Application 12: approved with changes", "Dear Ann,\n\nHK$1.00\n"),
        ("陳大文 <chan@uni.example.edu>", "申請 12: 已批准 — ✓", CHINESE),
    )
    now.move(timedelta(seconds=3))
    done = Mailer(ledger, smtp_of(smtp_server)).deliver()
    assert (done.sent, done.retrying, done.failed) == (ids, [], [])
    received = smtp_server.received()
    assert [r["rcpt_tos"] for r in received] == [["ann@uni.example.edu"], ["chan@uni.example.edu"]]
    assert {r["mail_from"] for r in received} == {"slicehub@hub.example.org"}
    first, second = (r["message"] for r in received)
    assert first["From"] == FROM and first["To"] == "ann@uni.example.edu"
    assert first["Subject"] == "Application 12: approved with changes"
    assert parsedate_to_datetime(first["Date"]) == T0  # when the change queued it
    assert first["Message-ID"] == f"<outbox.{ids[0]}.20261207020000@hub.example.org>"
    assert first.get_content_type() == "text/plain" and first.get_content_charset() == "utf-8"
    assert first.get_content() == "Dear Ann,\n\nHK$1.00\n"
    assert second["Subject"] == "申請 12: 已批准 — ✓"
    assert second["To"] == "陳大文 <chan@uni.example.edu>"
    assert second.get_content().splitlines() == CHINESE.splitlines()  # CRLF inside base64
    assert second.get_content_charset() == "utf-8"
    for mail_id in ids:
        r = row(ledger, mail_id)
        assert (r.status, r.sent_at, r.attempts, r.next_attempt_at) == (SENT, now.at, 0, None)
    assert Mailer(ledger, smtp_of(smtp_server)).deliver().sent == []  # never twice
    assert len(smtp_server.received()) == 2


def test_a_mail_whose_next_try_has_not_come_waits(ledger, smtp_server, now):
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "s", "b"), at=T0 + MIN)
    mailer = Mailer(ledger, smtp_of(smtp_server))
    assert mailer.deliver().sent == [] and smtp_server.received() == []
    now.move(MIN)
    assert mailer.deliver().sent == [mail_id]


def test_a_refusing_server_keeps_the_mail_pending_with_the_error_and_the_next_try(
    ledger, smtp_server, now, caplog
):
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "Submitted", "b"))
    mailer = Mailer(ledger, smtp_of(smtp_server))
    smtp_server.refuse("451 4.3.0 Mailbox busy, try again later")
    with caplog.at_level(logging.WARNING, "slicehub.quota.mail"):
        assert mailer.deliver().retrying == [mail_id]
    r = row(ledger, mail_id)
    assert (r.status, r.attempts, r.next_attempt_at) == (PENDING, 1, T0 + MIN)
    assert r.last_error == (
        f"127.0.0.1:{smtp_server.port} refused the recipient: "
        "451 4.3.0 Mailbox busy, try again later"
    )
    assert caplog.messages == [
        f"Mail {mail_id} to ann@uni.example.edu (application:12) was not sent, attempt 1 of 10: "
        f"{r.last_error}; next try at 2026-12-07T02:01:00+00:00"
    ]
    smtp_server.accept()
    assert mailer.deliver().sent == []  # not before its next try
    now.move(MIN)
    assert mailer.deliver().sent == [mail_id]
    assert [m["Subject"] for m in smtp_server.messages()] == ["Submitted"]
    assert row(ledger, mail_id).last_error == r.last_error  # what happened before it went


def test_a_server_that_is_down_delays_the_mail_with_backoff_until_it_is_back(
    ledger, smtp_server, now
):
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "Approved", "b"))
    mailer = Mailer(ledger, smtp_of(smtp_server))
    smtp_server.stop()
    try:
        for attempt, wait in ((1, MIN), (2, 2 * MIN), (3, 4 * MIN)):
            assert mailer.deliver().retrying == [mail_id]
            r = row(ledger, mail_id)
            assert (r.attempts, r.next_attempt_at) == (attempt, now.at + wait)
            assert "cannot be reached (Connection refused)" in r.last_error
            now.move(wait)
    finally:
        smtp_server.start()
    assert mailer.deliver().sent == [mail_id]
    assert [m["Subject"] for m in smtp_server.messages()] == ["Approved"]


def test_the_wait_doubles_from_a_minute_to_an_hour_and_the_tenth_failure_is_final(
    ledger, smtp_server, now, caplog
):
    waits = [retry_delay(n) // MIN for n in range(1, MAX_ATTEMPTS + 3)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "s", "b"))
    with ledger.session() as db, db.begin():
        db.execute(update(OutboxMail).values(attempts=MAX_ATTEMPTS - 1))
    smtp_server.refuse("550 5.1.1 No such user")
    with caplog.at_level(logging.ERROR, "slicehub.quota.mail"):
        assert Mailer(ledger, smtp_of(smtp_server)).deliver().failed == [mail_id]
    r = row(ledger, mail_id)
    assert (r.status, r.attempts, r.next_attempt_at) == (FAILED, MAX_ATTEMPTS, None)
    assert "550 5.1.1 No such user" in r.last_error
    assert caplog.messages[0].startswith(
        f"Mail {mail_id} to ann@uni.example.edu (application:12) failed for good after 10 "
    )
    now.move(timedelta(days=1))
    smtp_server.accept()
    assert Mailer(ledger, smtp_of(smtp_server)).deliver().sent == []


def test_a_row_that_can_never_be_a_message_fails_at_once_and_the_rest_go(ledger, smtp_server, now):
    bad_subject, two_addresses, good = queue(
        ledger,
        ("ann@uni.example.edu", "Approved\nBcc: all@example.org", "b"),
        ("ann@uni.example.edu, ben@uni.example.edu", "Approved", "b"),
        ("ann@uni.example.edu", "Approved", "b"),
    )
    done = Mailer(ledger, smtp_of(smtp_server)).deliver()
    assert (done.failed, done.sent) == ([bad_subject, two_addresses], [good])
    assert "the mail cannot be sent as it is" in row(ledger, bad_subject).last_error
    assert "is not one e-mail address" in row(ledger, two_addresses).last_error
    assert [r["rcpt_tos"] for r in smtp_server.received()] == [["ann@uni.example.edu"]]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_two_mailers_at_once_send_each_mail_once(database, tmp_path, smtp_server, now, request):
    url = (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    first, second = Ledger(url), Ledger(url)  # two services: two engines, one database
    try:
        first.upgrade()
        ids = queue(first, *[(f"u{i}@uni.example.edu", f"Mail {i}", "b") for i in range(120)])
        mailers = [Mailer(first, smtp_of(smtp_server)), Mailer(second, smtp_of(smtp_server))]
        sent: list[list[int]] = [[], []]
        start = threading.Barrier(2)

        def run(k: int) -> None:
            start.wait()
            while done := mailers[k].deliver().sent:
                sent[k].extend(done)

        threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(sent[0] + sent[1]) == ids and not set(sent[0]) & set(sent[1])
        message_ids = [m["Message-ID"] for m in smtp_server.messages()]
        assert len(message_ids) == len(set(message_ids)) == len(ids)
    finally:
        first.dispose()
        second.dispose()


def test_starttls_with_sign_in_and_tls_from_the_start(
    ledger, smtp_server, now, tmp_path, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_server.cert))  # trust the test server's cert
    password = tmp_path / "smtp-password"
    password.write_text(smtp_server.password + "\n")
    password.chmod(0o600)
    signed_in = smtp_of(
        smtp_server, starttls=True, username=smtp_server.username, password_file=password
    )
    tls = smtp_of(smtp_server, port=smtp_server.ssl_port, ssl=True)
    queue(ledger, ("ann@uni.example.edu", "over STARTTLS", "b"))
    assert Mailer(ledger, signed_in).deliver().sent
    queue(ledger, ("ann@uni.example.edu", "over TLS", "b"))
    assert Mailer(ledger, tls).deliver().sent
    got = [(r["message"]["Subject"], r["tls"], r["auth"]) for r in smtp_server.received()]
    assert got == [("over STARTTLS", True, smtp_server.username), ("over TLS", True, "")]

    password.write_text("not-the-password")
    [*_, mail_id] = queue(ledger, ("ann@uni.example.edu", "refused", "b"))
    assert Mailer(ledger, signed_in).deliver().retrying == [mail_id]
    assert f"refused the sign-in as {smtp_server.username}: 535" in row(ledger, mail_id).last_error


def test_an_untrusted_certificate_is_refused(ledger, smtp_server, now):
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "s", "b"))
    assert Mailer(ledger, smtp_of(smtp_server, starttls=True)).deliver().retrying == [mail_id]
    assert "TLS with 127.0.0.1" in row(ledger, mail_id).last_error
    assert "CERTIFICATE_VERIFY_FAILED" in row(ledger, mail_id).last_error


async def test_the_loop_sends_what_is_queued_and_stops_when_told(ledger, smtp_server):
    mailer = Mailer(ledger, smtp_of(smtp_server), interval=0.05)
    task = asyncio.create_task(mailer.run())
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "s", "b"), at=clock.utcnow())
    for _ in range(100):
        if row(ledger, mail_id).status == SENT:
            break
        await asyncio.sleep(0.05)
    mailer.stop()
    await asyncio.wait_for(task, 5)
    assert row(ledger, mail_id).status == SENT and len(smtp_server.received()) == 1


async def test_without_an_smtp_server_mail_stays_queued_and_the_log_says_so_once(
    ledger, now, caplog
):
    [mail_id] = queue(ledger, ("ann@uni.example.edu", "s", "b"))
    mailer = Mailer(ledger, None)
    with caplog.at_level(logging.INFO, "slicehub.quota.mail"):
        await asyncio.wait_for(mailer.run(), 1)  # nothing to do: the loop ends at once
        assert mailer.deliver().sent == []
    assert caplog.messages == [
        "No SMTP server is configured ([smtp] in the deployment file): the scheme's e-mails "
        "stay queued in the outbox until one is and the service restarts"
    ]
    assert row(ledger, mail_id).status == PENDING


def test_the_doctor_asks_the_server_and_sends_nothing(smtp_server, tmp_path, monkeypatch):
    from slicehub.doctor import examine

    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_server.cert))
    password = tmp_path / "smtp-password"
    password.write_text(smtp_server.password)
    password.chmod(0o600)
    deployment = tmp_path / "deployment.toml"
    deployment.write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nfrom_addr = "{FROM}"\n'
        f'username = "{smtp_server.username}"\npassword_file = "smtp-password"\n'
    )
    monkeypatch.setenv("SLICEHUB_DEPLOYMENT", str(deployment))
    monkeypatch.setenv("SLICEHUB_DATA_DIR", str(tmp_path / "data"))

    def finding():
        return next(f for f in examine() if f.check == "SMTP server").line()

    assert finding() == (
        f"OK    SMTP server: 127.0.0.1:{smtp_server.port} answers "
        f"(STARTTLS, signed in as {smtp_server.username})"
    )
    smtp_server.stop()
    try:
        assert finding() == (
            f"FAIL  SMTP server: 127.0.0.1:{smtp_server.port} cannot be reached "
            "(Connection refused). Fix: start it or correct [smtp]; until it answers the "
            "scheme's e-mails wait in the outbox"
        )
    finally:
        smtp_server.start()
    assert smtp_server.received() == []

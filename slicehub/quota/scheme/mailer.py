"""Mail delivery: the outbox's pending rows leave through the deployment's SMTP server.

Each pass (`Mailer.deliver`) takes up to BATCH pending rows whose next try has come, oldest
first, claims them, sends each as one plain-text UTF-8 message (From, To, Subject, Date,
Message-ID) over one SMTP connection, and records what happened: sent (sent_at), or one more
attempt with the failure in a sentence (last_error) and the next try after a wait that doubles
from FIRST_RETRY up to LONGEST_RETRY; after MAX_ATTEMPTS the row is failed and stays for staff to
see. A row that can never become a message (a line break in its subject, not exactly one
address) is failed at its first try. Each failure is logged in a sentence. The stdlib's smtplib
does the talking, in a worker thread, so nothing blocks the quota service's loop.

A row is claimed by a conditional UPDATE that moves its next try LEASE ahead only while it is
still pending and due, so two mailers (two quota services overlapping for a second after a
hub's crash) never both claim it and never both send it. A mailer that dies between sending and
recording leaves its claim to lapse, and the row goes again after LEASE: delivery is at least
once, and a repeat keeps its Message-ID, so the recipient's mail system can tell. Without an
SMTP server configured the rows stay pending, and the log says so once.

Decides when and how a queued mail is sent and what a failure costs it. What a mail says is the
workflow's (`slicehub.quota.scheme.notify`); when it is queued, the outbox's.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from sqlalchemy import or_, select, update

from slicehub.common import clock
from slicehub.deployment import Smtp

from .outbox import FAILED, PENDING, SENT, OutboxMail

log = logging.getLogger("slicehub.quota.mail")

BATCH = 50  # rows per pass, sent over one connection
LEASE = timedelta(minutes=10)  # a claim lapses after this (a mailer that died mid-pass)
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 10  # about four hours of retries, then failed
# CRLF line ends; a body that is not ASCII goes quoted-printable or base64, so any server takes
# it (8BITMIME or not); CR and LF in a header value are refused, never sent
MAIL_POLICY = SMTP.clone(cte_type="7bit")


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed try: 1 min, 2, 4, … at most 1 h."""
    return min(FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 16), LONGEST_RETRY)


@dataclass(frozen=True)
class Queued:
    """A claimed row, as the sender needs it."""

    id: int
    to_addr: str
    subject: str
    body: str
    related: str
    created_at: datetime
    attempts: int


def compose(mail: Queued, from_addr: str) -> tuple[EmailMessage, str]:
    """The message for `mail` and its one recipient's address; ValueError (in a sentence) when
    the row can never be sent: a header with a line break, not exactly one address."""
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = from_addr
    msg["To"] = mail.to_addr
    addresses = msg["To"].addresses
    if len(addresses) != 1 or "@" not in addresses[0].addr_spec:
        raise ValueError(f"{mail.to_addr!r} is not one e-mail address")
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(mail.created_at)
    msg["Message-ID"] = message_id(mail, from_addr)
    msg.set_content(mail.body, charset="utf-8")
    return msg, addresses[0].addr_spec


def message_id(mail: Queued, from_addr: str) -> str:
    """The same for every try of one row, so a repeat can be recognised."""
    domain = parseaddr(from_addr)[1].rpartition("@")[2] or "slicehub.invalid"
    return f"<outbox.{mail.id}.{mail.created_at:%Y%m%d%H%M%S}@{domain}>"


def connect(smtp: Smtp) -> smtplib.SMTP:
    """A connection ready to send: greeted, TLS as configured, signed in when a username is
    set. Raises what smtplib raises; `describe` says it in a sentence."""
    context = ssl.create_default_context()
    if smtp.ssl:
        conn = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
    else:
        conn = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    try:
        conn.ehlo()
        if smtp.starttls:
            conn.starttls(context=context)
            conn.ehlo()
        if smtp.username:
            conn.login(smtp.username, smtp.password_file.read_text().strip())
    except BaseException:
        conn.close()
        raise
    return conn


def hang_up(conn: smtplib.SMTP) -> None:
    """QUIT, and close whatever the server answers: what was sent is sent."""
    try:
        conn.quit()
    except OSError:
        pass
    finally:
        conn.close()


def check_server(smtp: Smtp) -> str:
    """What `slicehub doctor` says of a server that answers: connected, greeted, TLS and
    sign-in as configured, no mail sent. Raises what `connect` raises."""
    hang_up(connect(smtp))
    how = "TLS" if smtp.ssl else "STARTTLS" if smtp.starttls else "no TLS"
    signed_in = f", signed in as {smtp.username}" if smtp.username else ""
    return f"{smtp.host}:{smtp.port} answers ({how}{signed_in})"


def describe(e: BaseException, smtp: Smtp) -> str:
    """A failure to send, in a sentence an operator can act on."""
    where = f"{smtp.host}:{smtp.port}"
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(e.recipients.values()))
        return f"{where} refused the recipient: {code} {_text(reply)}"
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return (
            f"{where} refused the sign-in as {smtp.username}: {e.smtp_code} "
            f"{_text(e.smtp_error)} (check [smtp] username and password_file)"
        )
    if isinstance(e, smtplib.SMTPResponseException):
        return f"{where} answered {e.smtp_code} {_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPNotSupportedError) and smtp.starttls and "STARTTLS" in str(e):
        return f"{where} does not offer STARTTLS (a server without it: [smtp] starttls = false)"
    if isinstance(e, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection ({e or 'no reason given'})"
    if isinstance(e, ssl.SSLError):
        return f"TLS with {where} failed ({e.reason or e})"
    if isinstance(e, smtplib.SMTPException):
        return f"{where}: {e}"
    if isinstance(e, OSError) and smtp.password_file and e.filename == str(smtp.password_file):
        return f"the password file {smtp.password_file} cannot be read ({e.strerror})"
    if isinstance(e, OSError):
        return f"{where} cannot be reached ({e.strerror or e})"
    return f"{type(e).__name__}: {e}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


@dataclass
class Delivery:
    """What one pass did, by row id."""

    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


class Mailer:
    """The outbox's sender: a pass every `interval` seconds until `stop` (see the module)."""

    def __init__(self, ledger, smtp: Smtp | None, interval: float = 5.0):
        self.ledger = ledger  # a Store: its sessionmaker is all the mailer uses
        self.smtp = smtp
        self.interval = interval
        self._stopping = threading.Event()  # seen by the sending thread between messages
        self._wake = asyncio.Event()

    def stop(self) -> None:
        """End the loop after the message being sent; rows not reached are released."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        if self.smtp is None:
            log.warning(
                "No SMTP server is configured ([smtp] in the deployment file): the scheme's "
                "e-mails stay queued in the outbox until one is and the service restarts"
            )
            return
        log.info("Sending the outbox's mail through %s:%s", self.smtp.host, self.smtp.port)
        delay = self.interval
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.deliver)
                delay = self.interval
            except Exception:  # a bug or the database: logged; CancelledError goes up
                log.exception("A mail delivery pass failed; trying again in %.0f s", delay)
                delay = min(delay * 2, 300)  # backoff, never a tight loop
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    def deliver(self) -> Delivery:
        """One pass: claim what is due, send it, record each outcome."""
        done = Delivery()
        if self.smtp is None:
            return done
        claimed = self.claim(clock.utcnow())
        if claimed:
            outcomes = self.send(claimed)
            self.record(claimed, outcomes, clock.utcnow(), done)
        return done

    def claim(self, now: datetime) -> list[Queued]:
        due = (OutboxMail.status == PENDING) & or_(
            OutboxMail.next_attempt_at.is_(None), OutboxMail.next_attempt_at <= now
        )
        with self.ledger.session() as db, db.begin():
            ids = db.scalars(
                select(OutboxMail.id)
                .where(due)
                .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
                .limit(BATCH)
            ).all()
            if not ids:
                return []
            # only rows still pending and due: what another mailer claimed meanwhile is not
            rows = db.execute(
                update(OutboxMail)
                .where(OutboxMail.id.in_(ids), due)
                .values(next_attempt_at=now + LEASE)
                .returning(
                    OutboxMail.id,
                    OutboxMail.to_addr,
                    OutboxMail.subject,
                    OutboxMail.body,
                    OutboxMail.related,
                    OutboxMail.created_at,
                    OutboxMail.attempts,
                )
                .execution_options(synchronize_session=False)
            ).all()
        return sorted((Queued(*row) for row in rows), key=lambda m: m.id)

    def send(self, claimed: list[Queued]) -> dict[int, tuple[str, bool] | None]:
        """Each row's outcome: ("", False) sent, (sentence, permanent) not sent, None not
        tried (the mailer is stopping)."""
        outcomes: dict[int, tuple[str, bool] | None] = {}
        ready = []
        for mail in claimed:
            try:
                ready.append((mail, *compose(mail, self.smtp.from_addr)))
            except ValueError as e:
                outcomes[mail.id] = (f"the mail cannot be sent as it is: {e}", True)
        if not ready:
            return outcomes
        try:
            conn = connect(self.smtp)
        except Exception as e:
            error = describe(e, self.smtp)
            return outcomes | {mail.id: (error, False) for mail, _, _ in ready}
        try:
            broken = ""
            for mail, msg, to in ready:
                if self._stopping.is_set():
                    outcomes[mail.id] = None
                elif broken:
                    outcomes[mail.id] = (broken, False)
                else:
                    try:
                        conn.send_message(msg, parseaddr(self.smtp.from_addr)[1], [to])
                        outcomes[mail.id] = ("", False)
                    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as e:
                        outcomes[mail.id] = (describe(e, self.smtp), False)
                    except OSError as e:  # the connection is gone: the rest wait too
                        broken = describe(e, self.smtp)
                        outcomes[mail.id] = (broken, False)
        finally:
            hang_up(conn)
        return outcomes

    def record(self, claimed: list[Queued], outcomes, now: datetime, done: Delivery) -> None:
        with self.ledger.session() as db, db.begin():
            for mail in claimed:
                mine = (OutboxMail.id == mail.id) & (OutboxMail.status == PENDING)
                outcome = outcomes.get(mail.id)
                if outcome is None:  # not tried: due again at once, no attempt counted
                    db.execute(update(OutboxMail).where(mine).values(next_attempt_at=now))
                    continue
                error, permanent = outcome
                if not error:
                    db.execute(
                        update(OutboxMail)
                        .where(mine)
                        .values(status=SENT, sent_at=now, next_attempt_at=None)
                    )
                    done.sent.append(mail.id)
                    continue
                attempts = mail.attempts + 1
                give_up = permanent or attempts >= MAX_ATTEMPTS
                retry_at = None if give_up else now + retry_delay(attempts)
                db.execute(
                    update(OutboxMail)
                    .where(mine)
                    .values(
                        status=FAILED if give_up else PENDING,
                        attempts=attempts,
                        last_error=error,
                        next_attempt_at=retry_at,
                    )
                )
                label = f"Mail {mail.id} to {mail.to_addr}" + (
                    f" ({mail.related})" if mail.related else ""
                )
                if give_up:
                    done.failed.append(mail.id)
                    log.error("%s failed for good after %s attempt(s): %s", label, attempts, error)
                else:
                    done.retrying.append(mail.id)
                    log.warning(
                        "%s was not sent, attempt %s of %s: %s; next try at %s",
                        label,
                        attempts,
                        MAX_ATTEMPTS,
                        error,
                        clock.isoformat(retry_at),
                    )

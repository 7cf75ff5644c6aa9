"""A real SMTP server for the tests: aiosmtpd in a process of its own (the `smtp_server`
fixture in tests/conftest.py starts it once per test session).

It listens on the loopback on two ports: one plain, offering STARTTLS and, once under TLS, AUTH
PLAIN/LOGIN for the one test account; one TLS from the first byte (SMTPS). Each message it
accepts becomes two files in `<folder>/inbox`: NAME.eml, the message as it came, and NAME.json
(the envelope, whether TLS and AUTH were used), written after it, whole before it appears.
While `<folder>/refuse` exists its text (e.g. "451 4.3.0 Try again later") is the answer to
every RCPT, so a test can make the server refuse and accept again. Its certificate, for
127.0.0.1, is made with openssl at start; a client trusts it through SSL_CERT_FILE.

    python tests/smtpserver.py FOLDER PORT SSL_PORT    # prints "ready" once both listen
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

USERNAME, PASSWORD = "slicehub-mailer", "test-only-smtp-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpServer:
    """The test's handle on the server process: where it listens, what it received, and the
    switches (refuse, accept, stop, start)."""

    host = "127.0.0.1"

    def __init__(self, folder: Path):
        self.folder = folder
        self.inbox = folder / "inbox"
        self.cert = folder / "cert.pem"  # the CA a client trusts (SSL_CERT_FILE)
        self.port, self.ssl_port = free_port(), free_port()
        self.username, self.password = USERNAME, PASSWORD
        self.process: subprocess.Popen | None = None

    def start(self) -> SmtpServer:
        """Start the process on its ports (the same after a stop) and wait until it listens."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.folder), str(self.port), str(self.ssl_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the test SMTP server did not start (it said {line!r})")
        return self

    def stop(self) -> None:
        """Stop the process: the ports refuse connections until `start`."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process.stdout.close()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None

    def refuse(self, reply: str = "451 4.3.0 Try again later") -> None:
        (self.folder / "refuse").write_text(reply)

    def accept(self) -> None:
        (self.folder / "refuse").unlink(missing_ok=True)

    def reset(self) -> None:
        """Running, accepting, inbox empty: how each test finds it."""
        if not self.running:
            self.start()
        self.accept()
        for path in self.inbox.iterdir():
            path.unlink()

    def received(self) -> list[dict]:
        """Every message received so far, oldest first: mail_from, rcpt_tos, tls, auth, data
        (the bytes as sent) and `message`, parsed (email.policy.default: headers decoded)."""
        found = []
        for path in sorted(self.inbox.glob("*.json"), key=lambda p: p.stat().st_mtime_ns):
            item = json.loads(path.read_text())
            item["data"] = path.with_suffix(".eml").read_bytes()
            text = item["data"].replace(b"\r\n", b"\n")  # SMTP's line ends, as readers take them
            item["message"] = email.message_from_bytes(text, policy=email.policy.default)
            found.append(item)
        return found

    def messages(self) -> list[EmailMessage]:
        return [item["message"] for item in self.received()]


# ---- the server process ----------------------------------------------------------------------


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


def _serve(folder: Path, port: int, ssl_port: int) -> None:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    cert, key = _make_certificate(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Inbox:
        def __init__(self, tls: bool = False):
            self.tls = tls  # TLS from the first byte (aiosmtpd's session.ssl is for STARTTLS)

        async def handle_RCPT(self, server, session, envelope, address, options):
            refuse = folder / "refuse"
            if refuse.exists():
                return refuse.read_text().strip()
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            item = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": self.tls or session.ssl is not None,
                "auth": _login(session.auth_data) if session.authenticated else "",
            }
            name = f"{time.time_ns()}-{uuid.uuid4().hex}"
            (inbox / f"{name}.eml").write_bytes(envelope.original_content)
            partial = inbox / f"{name}.part"
            partial.write_text(json.dumps(item))
            partial.rename(inbox / f"{name}.json")
            return "250 Message accepted for delivery"

    def _login(data) -> str:
        return data.login.decode() if data is not None else ""

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == USERNAME and auth_data.password.decode() == PASSWORD
        return AuthResult(success=ok, handled=False, auth_data=auth_data)  # 535 if not ok

    plain = Controller(
        Inbox(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,  # offers STARTTLS; AUTH only once under TLS (aiosmtpd's default)
        authenticator=authenticate,
        decode_data=False,
    )
    tls = Controller(
        Inbox(tls=True),
        hostname="127.0.0.1",
        port=ssl_port,
        ssl_context=context,
        authenticator=authenticate,
        decode_data=False,
    )
    plain.start()
    tls.start()
    print("ready", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        plain.stop()
        tls.stop()


if __name__ == "__main__":
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # not its notice about its own names
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    os.environ.pop("SSL_CERT_FILE", None)
    _serve(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))

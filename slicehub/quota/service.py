"""The quota service: a JupyterHub-managed service that meters, warns, enforces and answers.

Run by the hub (`c.JupyterHub.services`, see hub_config/) as `python -m slicehub.quota.service`,
a traitlets `Application` like the ecosystem's services: `--help` lists its options,
`--help-all` every setting, `--config` loads a Python config file (`c.SlicehubQuota.x = ...`).
It reads the hub's usual service environment (JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_PREFIX,
JUPYTERHUB_SERVICE_URL, JUPYTERHUB_API_URL); its own settings default to the SLICEHUB_*
environment (SLICEHUB_LEDGER_URL, SLICEHUB_METER_INTERVAL, SLICEHUB_ORPHAN_GRACE,
SLICEHUB_MAIL_INTERVAL, SLICEHUB_DEPLOYMENT). From the deployment file it takes the SMTP server
([smtp]); a bad file stops the start with the file, the key and the fix.

Start-up happens in named steps, in order, before it listens: `migrate` (the ledger's schema,
retried with backoff while the database is unreachable), `seed` (the demo's ledger, only with
--seed-demo), `check_prices` (with --site: every slice type the site offers must have a list
price, or the service stops with a sentence naming the file, the types and the fix; JupyterHub
stops when a managed service exits during its start-up, so the hub's log shows that sentence).
Then it serves the REST API and the pages (`make_app`) and runs the metering loop
(`slicehub.quota.meter_loop.Meter`), the mailer (`slicehub.quota.scheme.mailer.Mailer`, the
outbox's e-mails) and the scheme's progress reports' opener (`scheme.report_loop.ReportOpener`,
every --report-interval seconds) until SIGTERM or SIGINT (the hub stopping it) or until the hub
that started it is gone (`slicehub.common.hub_watch.hub_gone`): a hub killed with `kill -9` sends
nothing, so the service watches for it and exits within a second or so, never to meter beside the
quota service of the next hub. The two may overlap for that second; metering is idempotent (a tick
charges each session up to now, once), so nothing is charged twice, and the mailer claims each
mail before sending it, so nothing is sent twice. A service still waiting
for its database in `migrate` meters nothing, and is watched from the moment it serves.

This module decides the service's settings and lifecycle; the ledger's rules are the ledger's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from typing import NoReturn
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.engine import make_url
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, TraitError, Unicode, default, validate
from traitlets.config import Application, catch_config_error

from slicehub.common.hub_client import HubClient
from slicehub.common.hub_watch import hub_gone, hub_pid
from slicehub.config_file import ConfigFileError
from slicehub.deployment import Smtp, load_deployment
from slicehub.settings import Settings

from . import api, idle_api, pages
from .demo import missing_prices, seed_if_empty
from .hold_queue import HoldQueue
from .hub_groups import UserGroups
from .hub_users import HubUsers
from .ledger import Ledger
from .meter_loop import Meter
from .metrics import LedgerCollector
from .pages_class import class_routes
from .prewarm_api import prewarm_routes
from .reader import LedgerReader
from .scheme.mailer import Mailer
from .scheme.report_loop import ReportOpener
from .scheme.routes import routes as scheme_routes
from .site_parking import SiteParking, read_site_parking
from .site_prices import SitePriceError, read_list_prices

log = logging.getLogger("slicehub.quota")


class MetricsHandler(api.QuotaHandler):
    @web.authenticated
    def get(self):
        if not (api.METRICS in self.scopes() or self.is_staff()):
            raise web.HTTPError(403, "Metrics need the custom:quota:metrics permission.")
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(generate_latest(self.settings["registry"]))


def make_app(
    ledger: Ledger,
    prefix: str = "/services/quota/",
    hub: HubClient | None = None,
    site_parking: SiteParking | None = None,
) -> web.Application:
    """The service's routes; holds go through one `HoldQueue` (simultaneous starts decided
    together); users' hub groups are asked of `hub` (None: nobody's groups are known, so
    membership is by member rows alone); idle sessions are judged by `site_parking` (None: the
    defaults of `slicehub.quota.site_parking`)."""
    readings: dict = {}  # session id -> idle_api.Seen, the latest reading of each
    registry = CollectorRegistry()
    registry.register(LedgerCollector(ledger, readings))

    def route(path):
        return url_path_join(prefix, path)

    return web.Application(
        [
            (route("api/projects"), api.ProjectsHandler),
            (route(r"api/projects/([a-z0-9-]+)"), api.ProjectHandler),
            (route("api/sessions"), api.SessionsHandler),
            (route("api/warnings"), api.WarningsHandler),
            (route("api/holds"), api.HoldsHandler),
            (route(r"api/sessions/(\d+)/release"), api.ReleaseHandler),
            (route(r"api/sessions/(\d+)/begin"), api.BeginHandler),
            (route(r"api/sessions/(\d+)/extend"), api.ExtendHandler),
            (route(r"api/sessions/(\d+)/activity"), idle_api.ActivityHandler),
            (route(r"api/sessions/(\d+)/park"), idle_api.ParkHandler),
            (route("api/health"), api.HealthHandler),
            (route("metrics"), MetricsHandler),
            (route(""), web.RedirectHandler, {"url": route("usage")}),
            (route("usage"), pages.UsagePage),
            (route("staff"), pages.StaffPage),
            (route("oauth_callback"), HubOAuthCallbackHandler),
            *scheme_routes(route),
            *prewarm_routes(route),
            *class_routes(route),
        ],
        ledger=ledger,
        reader=LedgerReader(ledger),
        holds=HoldQueue(ledger),
        groups=UserGroups(hub),
        users=HubUsers(hub),
        hub=hub,
        site_parking=site_parking or SiteParking(),
        readings=readings,
        registry=registry,
        cookie_secret=os.urandom(32),
    )


def settle_memory() -> None:
    """Move everything allocated at start-up out of the garbage collector's way (`gc.freeze`):
    a full collection then scans only what requests allocate. Measured in
    bench/hold_latency.py: without it a full collection paused a batch of 200 holds for
    ~35-50 ms now and then; the batches themselves take ~15 ms."""
    gc.collect()
    gc.freeze()


def _seconds_from_env(name: str, fallback: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return fallback
    try:
        return float(raw)
    except ValueError:
        raise TraitError(f"${name}={raw!r} is not a number of seconds.") from None


class SlicehubQuota(Application):
    """The quota service (see the module docstring)."""

    name = "slicehub-quota"
    description = """The quota service of Slicehub: holds, metering, warnings and the end of
    sessions against the subsidy ledger, its REST API and its hub pages. Run by JupyterHub as a
    managed service."""
    examples = """
python -m slicehub.quota.service --ledger-url=postgresql+psycopg://slicehub@db/slicehub
python -m slicehub.quota.service --site=/etc/slicehub/site.toml --meter-interval=5
python -m slicehub.quota.service --config=/etc/slicehub/quota_config.py
"""

    config_file = Unicode(
        "",
        config=True,
        help="""Python config file to load (`c.SlicehubQuota.meter_interval = 5`, ...); the
        command line wins over it.

        Default: "" (none). Example: "/etc/slicehub/quota_config.py".
        """,
    )

    ledger_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the subsidy ledger.

        Default: $SLICEHUB_LEDGER_URL, else SQLite ledger.sqlite in the data directory
        (slicehub.settings). Example: "postgresql+psycopg://slicehub@db/slicehub".
        """,
    )

    meter_interval = Float(
        10,
        config=True,
        help="""Seconds between metering ticks (charges, warnings, the end of sessions).

        Default: $SLICEHUB_METER_INTERVAL, else 10. Example: 5.
        """,
    )

    orphan_grace = Float(
        120,
        config=True,
        help="""Seconds a ledger session may go without a server on the hub before it is closed
        as orphaned (checked every min(60 s, the grace)).

        Default: $SLICEHUB_ORPHAN_GRACE, else 120. Example: 300.
        """,
    )

    site_file = Unicode(
        "",
        config=True,
        help="""The deployment's site file (TOML). With it, the service refuses to start while
        a slice type the site offers has no list price in the ledger, and --seed-demo seeds
        the site's list prices.

        Default: "" (no price check). Example: "/etc/slicehub/site.toml".
        """,
    )

    seed_demo = Bool(
        False,
        config=True,
        help="""Seed an empty ledger with the demo's scheme, projects, members and the site
        file's list prices (the embedded demo).

        Default: False. Example: True.
        """,
    )

    deployment_file = Unicode(
        config=True,
        help="""The deployment file (TOML), for its [smtp] table: the server the scheme's
        e-mails leave through (none: they stay queued in the outbox).

        Default: $SLICEHUB_DEPLOYMENT, else /etc/slicehub/deployment.toml when it exists, else
        none. Example: "/etc/slicehub/deployment.toml".
        """,
    )

    mail_interval = Float(
        5,
        config=True,
        help="""Seconds between the mailer's passes over the outbox.

        Default: $SLICEHUB_MAIL_INTERVAL, else 5. Example: 1.
        """,
    )

    report_interval = Float(
        300,
        config=True,
        help="""Seconds between passes that open the scheme's progress reports whose period
        has ended (each with its mail to the PI).

        Default: 300. Example: 60.
        """,
    )

    aliases = {
        "ledger-url": "SlicehubQuota.ledger_url",
        "meter-interval": "SlicehubQuota.meter_interval",
        "mail-interval": "SlicehubQuota.mail_interval",
        "report-interval": "SlicehubQuota.report_interval",
        "deployment": "SlicehubQuota.deployment_file",
        "orphan-grace": "SlicehubQuota.orphan_grace",
        "site": "SlicehubQuota.site_file",
        "config": "SlicehubQuota.config_file",
        "log-level": "Application.log_level",
    }
    flags = {
        "seed-demo": (
            {"SlicehubQuota": {"seed_demo": True}},
            "Seed an empty ledger for the embedded demo.",
        ),
    }

    @default("ledger_url")
    def _ledger_url_default(self) -> str:
        return Settings().ledger_url

    @default("meter_interval")
    def _meter_interval_default(self) -> float:
        return _seconds_from_env("SLICEHUB_METER_INTERVAL", 10)

    @default("orphan_grace")
    def _orphan_grace_default(self) -> float:
        return _seconds_from_env("SLICEHUB_ORPHAN_GRACE", 120)

    @default("mail_interval")
    def _mail_interval_default(self) -> float:
        return _seconds_from_env("SLICEHUB_MAIL_INTERVAL", 5)

    @default("deployment_file")
    def _deployment_file_default(self) -> str:
        return Settings().deployment_path

    @validate("meter_interval", "mail_interval", "report_interval")
    def _positive_interval(self, proposal) -> float:
        if proposal.value <= 0:
            raise TraitError(
                f"{proposal.trait.name} must be more than 0 seconds, not {proposal.value}."
            )
        return proposal.value

    @validate("orphan_grace")
    def _grace_not_negative(self, proposal) -> float:
        if proposal.value < 0:
            raise TraitError(f"orphan_grace must be 0 seconds or more, not {proposal.value}.")
        return proposal.value

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.INFO

    @default("log_format")
    def _log_format_default(self) -> str:
        return "[%(levelname).1s %(asctime)s %(name)s] %(message)s"

    ledger: Ledger | None = None
    smtp: Smtp | None = None  # the deployment file's [smtp]
    hub_pid = 0  # the hub that started this service (`hub_watch.hub_pid`)

    @catch_config_error
    def initialize(self, argv=None) -> None:
        self.hub_pid = hub_pid()
        super().initialize(argv)
        if self.config_file:
            if not os.path.isfile(self.config_file):
                self.fail(
                    f"{self.config_file}: (file): does not exist. "
                    "Fix: point --config at the quota service's config file"
                )
            self.load_config_file(self.config_file)
        try:
            self.smtp = load_deployment(self.deployment_file or None).smtp
        except ConfigFileError as e:
            self.fail(str(e))
        self.ledger = Ledger(self.ledger_url)
        # read every setting now: a bad one ($SLICEHUB_METER_INTERVAL=abc) stops the start here
        self.log.debug(
            "Ledger %s; a tick every %s s; orphaned sessions closed after %s s",
            self.ledger.engine.url,
            self.meter_interval,
            self.orphan_grace,
        )

    def fail(self, sentence: str) -> NoReturn:
        """Stop at start-up with `sentence` on stderr and exit status 2."""
        print(f"Slicehub cannot start: {sentence}", file=sys.stderr)
        self.exit(2)

    # -- the start-up steps, in order --------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the ledger's schema up to date, retrying with backoff (the database may be
        restarting too) instead of exiting and being restarted by the hub in a tight loop."""
        delay = 1.0
        while True:
            try:
                await asyncio.to_thread(self.ledger.upgrade)
                return
            except Exception as e:
                log.error("Cannot reach the ledger database (%s); retrying in %.0f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    def seed(self) -> None:
        """With seed_demo: the demo's scheme, projects and the site's list prices, made once
        when the ledger is empty."""
        if not self.seed_demo:
            return
        if seed_if_empty(self.ledger, self.list_prices()):
            log.info("Seeded the demo's ledger")

    def check_prices(self) -> None:
        """With site_file: every slice type the site offers has a list price in the ledger,
        or the service stops (exit status 2) with the file, the types and the fix."""
        if not self.site_file:
            return
        unpriced = missing_prices(self.ledger, self.list_prices())
        if unpriced:
            where = make_url(self.ledger_url).render_as_string(hide_password=True)
            self.fail(
                f"{self.site_file}: slice_types: {', '.join(unpriced)} has no list price in the "
                f"ledger ({where}). "
                "Fix: slicehub admin price set <type> --per-hour <HK$> --from <date>"
            )

    def list_prices(self) -> dict[str, int]:
        """The site file's list prices (none without a site file); a bad one stops the
        service with the file, the key and the fix."""
        if not self.site_file:
            return {}
        try:
            return read_list_prices(self.site_file)
        except SitePriceError as e:
            self.fail(str(e))

    def site_parking(self) -> SiteParking:
        """The site file's [parking] (the defaults without a site file); a bad one stops the
        service with the file, the key and the fix."""
        if not self.site_file:
            return SiteParking()
        try:
            return read_site_parking(self.site_file)
        except ConfigFileError as e:
            self.fail(str(e))

    # -- serving ---------------------------------------------------------------------------

    async def serve(self) -> None:
        api_url = os.environ.get("JUPYTERHUB_API_URL")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not api_url or not token:
            self.fail(
                "JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are not set. Fix: run the quota "
                "service as a hub-managed service (c.JupyterHub.services), which sets them"
            )
        await self.migrate()
        self.seed()
        self.check_prices()
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/quota/")
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        hub = HubClient(api_url, token)
        app = make_app(self.ledger, prefix, hub, self.site_parking())
        server = HTTPServer(app)
        server.listen(url.port, url.hostname)
        meter = Meter(self.ledger, hub, self.meter_interval, self.orphan_grace)
        mailer = Mailer(self.ledger, self.smtp, self.mail_interval)
        reports = ReportOpener(self.ledger, self.report_interval)
        settle_memory()
        task = asyncio.create_task(meter.run())
        mailing = asyncio.create_task(mailer.run())
        opening = asyncio.create_task(reports.run())
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)  # shut down promptly with the hub
        watch = asyncio.create_task(self.watch_hub(done))
        log.info("Quota service on %s%s, ledger %s", url.geturl(), prefix, self.ledger.engine.url)
        await done.wait()
        watch.cancel()
        task.cancel()
        mailer.stop()  # after the message being sent, which is then recorded
        reports.stop()  # after the pass in progress, which is one transaction
        server.stop()
        await mailing
        await opening
        await app.settings["holds"].close()
        self.ledger.dispose()

    async def watch_hub(self, done: asyncio.Event) -> None:
        """Set `done` once the hub that started this service is gone (the module docstring)."""
        await hub_gone(self.hub_pid)
        log.warning(
            "The hub (pid %s) that started this quota service is gone; stopping, so that only "
            "the next hub's quota service meters",
            self.hub_pid,
        )
        done.set()

    def start(self) -> None:
        # the service's modules (the hold queue, the metering loop) and tornado log as the app
        logging.basicConfig(level=self.log_level, format=self.log_format, datefmt=self.log_datefmt)
        asyncio.run(self.serve())


def main(argv=None) -> None:
    SlicehubQuota.launch_instance(argv)


if __name__ == "__main__":
    main()

"""Statements and scheme reports written out: CSV for spreadsheets, HTML for people.

Decides how a statement reads: money in CSV as plain HK$ with two decimals (no currency sign,
which stops a spreadsheet) and on pages through `format_money`; times in Hong Kong time; the
daily-spend chart's geometry (SVG bars, stacked subsidy and co-pay, a scale of round numbers);
text a spreadsheet would run as a formula is quoted. What a statement contains is decided by
`slicehub.quota.statement`; this module only renders it. The HTML templates are the package's
(`slicehub/quota/templates`), shared with the hub pages.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

from jinja2 import Environment, PackageLoader, StrictUndefined

from slicehub.common import clock
from slicehub.common.money import BASIS_POINTS, format_money

from .statement import CENTRE_TZ, DaySpend, IdleTime, MonthlyStatement, SchemeReport

# -- writing it out -----------------------------------------------------------------------


def money_plain(cents: int) -> str:
    """12345 -> "123.45", -5 -> "-0.05": for CSV, where a currency sign stops a spreadsheet."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def hkt(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return moment.astimezone(CENTRE_TZ).strftime(fmt) if moment is not None else ""


def rate_text(rate_bp: int) -> str:
    pct = Decimal(rate_bp) * 100 / BASIS_POINTS
    return f"{pct.normalize():f}%"


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(CENTRE_TZ).replace(microsecond=0).isoformat() if moment else ""


def text_cell(value: str) -> str:
    """Text a spreadsheet must not run as a formula (names are typed by people)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


STATEMENT_COLUMNS = [
    "session",
    "user",
    "slice_type",
    "start",
    "stop",
    "slice_hours",
    "list_cost_hkd",
    "subsidy_hkd",
    "copay_hkd",
    # the session's idle end, in the month it stopped: part of the amounts above, not added
    "stop_reason",
    "parked",
    "idle_slice_hours",
    "idle_list_cost_hkd",
    "idle_subsidy_hkd",
    "parking_returned_subsidy_hkd",
    # a pre-warmed server's course, its payer and outcome (statement_prewarm); after the total,
    # one `prewarm` row per course, payer and outcome with its servers and server-minutes
    "prewarm_course",
    "prewarm_paid_by",
    "prewarm",
    "prewarm_servers",
    "prewarm_minutes",
]
NO_PREWARM = ["", "", "", "", ""]


def _idle_cells(idle: IdleTime) -> list[str]:
    return [
        str(idle.parked),
        f"{idle.slice_hours:.4f}",
        money_plain(idle.list_cents),
        money_plain(idle.subsidy_cents),
        money_plain(idle.returned_subsidy_cents),
    ]


def statement_csv(st: MonthlyStatement) -> str:
    """One row per session, then a `total` row; times ISO 8601 in HKT, money in HK$ (no sign)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(STATEMENT_COLUMNS)
    for r in st.rows:
        w.writerow(
            [
                r.session_id,
                text_cell(r.username),  # "@A1" and "-A1" are hub user names
                r.slice_type,
                _iso(r.started_at),
                _iso(r.stopped_at),
                f"{r.slice_hours:.4f}",
                money_plain(r.amounts.list_cents),
                money_plain(r.amounts.subsidy_cents),
                money_plain(r.amounts.copay_cents),
                text_cell(r.stop_reason),
                *_idle_cells(r.idle),
                *(
                    [text_cell(r.prewarm_course), st.project.slug, r.prewarm, "", f"{r.minutes}"]
                    if r.prewarm
                    else NO_PREWARM
                ),
            ]
        )
    w.writerow(
        [
            "total",
            "",
            "",
            _iso(st.starts),
            _iso(st.ends),
            f"{st.total_slice_hours:.4f}",
            money_plain(st.total.list_cents),
            money_plain(st.total.subsidy_cents),
            money_plain(st.total.copay_cents),
            "",
            *_idle_cells(st.idle),
            *NO_PREWARM,
        ]
    )
    for x in st.prewarm:
        w.writerow(
            [
                "prewarm",
                "",
                "",
                _iso(st.starts),
                _iso(st.ends),
                "",
                money_plain(x.amounts.list_cents),
                money_plain(x.amounts.subsidy_cents),
                money_plain(x.amounts.copay_cents),
                "",
                *([""] * 5),  # no idle cells on a line
                text_cell(x.course),
                text_cell(x.paid_by),
                x.outcome,
                str(x.servers),
                f"{x.minutes}",
            ]
        )
    return out.getvalue()


SCHEME_COLUMNS = [
    "scheme",
    "project",
    "name",
    "organisation",
    "pi",
    "course",
    "grants_awarded_hkd",
    "grants_in_force_hkd",
    "list_cost_hkd",
    "subsidy_disbursed_hkd",
    "copay_hkd",
    "subsidy_held_hkd",
    "subsidy_left_hkd",
    # every stopped session's idle end and parking, all time (of which: part of the charges)
    "parked_sessions",
    "idle_slice_hours",
    "idle_list_cost_hkd",
    "idle_subsidy_hkd",
    "parking_returned_subsidy_hkd",
]


def scheme_report_csv(reports: list[SchemeReport]) -> str:
    """One row per project, each scheme ending with a `total` row."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(SCHEME_COLUMNS)
    for rep in reports:
        for x in rep.lines:
            w.writerow(
                [
                    text_cell(rep.name),
                    x.slug,
                    text_cell(x.name),
                    text_cell(x.organisation),
                    text_cell(x.pi),
                    "yes" if x.is_course else "no",
                    money_plain(x.grants_awarded_cents),
                    money_plain(x.balance.grants_cents),
                    money_plain(x.charged.list_cents),
                    money_plain(x.charged.subsidy_cents),
                    money_plain(x.charged.copay_cents),
                    money_plain(x.balance.subsidy_held_cents),
                    money_plain(x.balance.subsidy_left_cents),
                    *_idle_cells(x.idle),
                ]
            )
        t = rep.totals
        w.writerow(
            [
                text_cell(rep.name),
                "total",
                "",
                "",
                "",
                "",
                *(
                    money_plain(t[k])
                    for k in (
                        "grants_awarded",
                        "grants_in_force",
                        "list_charged",
                        "subsidy_disbursed",
                        "copay",
                        "subsidy_held",
                        "subsidy_left",
                    )
                ),
                *_idle_cells(rep.idle),
            ]
        )
    return out.getvalue()


# The chart's geometry (SVG user units); the page scales it to its width.
CHART_W, CHART_H = 760, 280
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 92, 12, 16, 40


def daily_chart(days: list[DaySpend]) -> dict:
    """Bars for the daily-spend chart: subsidy below, co-pay stacked on it, list cost = both.

    A day whose parts are negative (only reversals that day) draws as zero; the table beside
    the chart has the exact numbers.
    """
    plot_w = CHART_W - _PAD_L - _PAD_R
    plot_h = CHART_H - _PAD_T - _PAD_B
    top = max([d.amounts.list_cents for d in days] + [0])
    scale_max = _nice_ceiling(top)
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    bars = []
    for i, d in enumerate(days):
        sub = max(d.amounts.subsidy_cents, 0)
        cop = max(d.amounts.copay_cents, 0)
        h_sub = plot_h * sub / scale_max
        h_cop = plot_h * cop / scale_max
        x = _PAD_L + i * slot + (slot - bar_w) / 2
        base = _PAD_T + plot_h
        bars.append(
            {
                "x": round(x, 2),
                "w": round(bar_w, 2),
                "sub_y": round(base - h_sub, 2),
                "sub_h": round(h_sub, 2),
                "cop_y": round(base - h_sub - h_cop, 2),
                "cop_h": round(h_cop, 2),
                "label_x": round(_PAD_L + i * slot + slot / 2, 2),
                "day": d.day.day,
                "show_label": d.day.day == 1 or d.day.day % 5 == 0,
                "title": (
                    f"{d.day:%d %b}: {format_money(d.amounts.list_cents)} list cost, "
                    f"{format_money(d.amounts.subsidy_cents)} subsidy, "
                    f"{format_money(d.amounts.copay_cents)} co-pay"
                ),
            }
        )
    ticks = [
        {
            "y": round(_PAD_T + plot_h - plot_h * k / 4, 2),
            "label": format_money(scale_max * k // 4),
        }
        for k in range(5)
    ]
    return {
        "width": CHART_W,
        "height": CHART_H,
        "left": _PAD_L,
        "right": CHART_W - _PAD_R,
        "base": _PAD_T + plot_h,
        "bars": bars,
        "ticks": ticks,
        "max_label": format_money(top),
    }


def _nice_ceiling(cents: int) -> int:
    """The smallest 1, 2, 2.5 or 5 * 10^k cents ≥ `cents` (at least HK$1), divisible by 4."""
    if cents <= 100:
        return 100
    magnitude = 10 ** (len(str(cents)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        candidate = int(step * magnitude)
        if candidate >= cents and candidate % 4 == 0:
            return candidate
    return 10 * magnitude


def template_environment() -> Environment:
    """The statements' templates, with the money, hkt and rate filters."""
    env = Environment(
        loader=PackageLoader("slicehub.quota", "templates"),
        autoescape=True,  # names and user names are typed by people
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = format_money
    env.filters["hkt"] = hkt
    env.filters["rate"] = rate_text
    return env


def statement_html(st: MonthlyStatement) -> str:
    return (
        template_environment()
        .get_template("statement.html.j2")
        .render(
            kind="statement",
            title=f"Statement for {st.project.slug}, {st.starts:%B %Y}",
            st=st,
            chart=daily_chart(st.days),
            generated=hkt(st.generated_at),
        )
    )


def scheme_report_html(reports: list[SchemeReport], generated_at: datetime | None = None) -> str:
    names = ", ".join(r.name for r in reports) or "no schemes"
    return (
        template_environment()
        .get_template("statement.html.j2")
        .render(
            kind="scheme",
            title=f"Subsidy report: {names}",
            reports=reports,
            generated=hkt(generated_at or clock.utcnow()),
        )
    )

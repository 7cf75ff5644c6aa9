"""The spawn form's quotes: per project the types it may use, the subsidy's share and the
co-pay per hour, the hours its allocation buys, and why a type cannot be chosen; rendered."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from slicehub.common.catalogue import parse_slice_type
from slicehub.spawners.form import form_template
from slicehub.spawners.form_offer import hours_affordable, offer
from slicehub.spawners.local.manager import Availability
from slicehub.spawners.site import SliceType

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def slice_type(name: str, price: int) -> SliceType:
    return SliceType(name, parse_slice_type(name), 2, 8 * 1024**3, price, f"{name} slice")


TYPES = [
    Availability(slice_type("h100.1g.10gb", 550), 3, 4),
    Availability(slice_type("h100x1", 3850), 0, 1),
    Availability(slice_type("cpu", 80), 10, 10),
]


def project(slug="lab", **kw) -> dict:
    p = {
        "project": slug,
        "name": f"{slug} name",
        "subsidy_rate_bp": 7000,
        "allowed_slice_types": ["*"],
        "policy": "stop",
        "subsidy_left_cents": 200_00,
        "credit_left_cents": 0,
        "is_course": False,
        "member": {"role": "researcher", "cap_left_cents": None, "class_windows": []},
    }
    p.update(kw)
    return p


def test_quotes_split_each_hour_and_say_what_the_allocation_buys():
    (o,) = offer([project()], TYPES, False, NOW)
    one_g, whole, cpu = o.quotes
    assert (one_g.price_cents, one_g.subsidy_cents, one_g.copay_cents) == (550, 385, 165)
    assert whole.subsidy_cents + whole.copay_cents == whole.price_cents == 3850
    assert whole.hours == pytest.approx(200_00 / 2695)  # 7.42 h of a whole H100
    assert one_g.reason(2) == "" and whole.reason(2) == "None free right now (all 1 in use)."
    assert cpu.reason(8) == ""
    assert one_g.reason(60) == (
        "The allocation can pay 51.9 h of it; shorten the session or choose a smaller slice."
    )


def test_a_queue_keeps_a_full_type_open_and_a_type_the_cluster_lacks_closed():
    (o,) = offer([project()], [*TYPES, Availability(slice_type("h100x4", 15400), 0, 0)], True, NOW)
    assert [q.unavailable for q in o.quotes] == [
        "",
        "",
        "",
        "Not available on this cluster right now.",
    ]


def test_types_the_project_may_not_use_are_not_offered():
    (o,) = offer([project(allowed_slice_types=["cpu", "h100.1g.10gb"])], TYPES, False, NOW)
    assert [q.name for q in o.quotes] == ["h100.1g.10gb", "cpu"]


def test_full_price_credit_and_a_members_cap_bound_the_hours():
    p = project(policy="full_price", subsidy_left_cents=100_00, credit_left_cents=50_00)
    assert hours_affordable(550, p, None, 7000) == pytest.approx(150_00 / 385)
    assert hours_affordable(550, p, 38_50, 7000) == pytest.approx(10)
    assert hours_affordable(550, p, None, 0) is None  # no subsidy: nothing bounds it here
    assert hours_affordable(550, project(subsidy_left_cents=-5), None, 7000) == 0


def test_a_student_outside_the_class_window_sees_when_the_next_opens():
    windows = [
        {
            "starts_at": (NOW + timedelta(hours=3)).isoformat(),
            "ends_at": (NOW + timedelta(hours=5)).isoformat(),
        }
    ]
    student = {"role": "student", "cap_left_cents": 20_00, "class_windows": windows}
    (o,) = offer([project("ml101", is_course=True, member=student)], TYPES, False, NOW)
    assert o.blocked == "Course ml101 is outside its class windows now."
    assert o.next_window == windows[0]["starts_at"]
    (inside,) = offer(
        [project("ml101", is_course=True, member=student)],
        TYPES,
        False,
        NOW + timedelta(hours=4),
    )
    assert inside.blocked == "" and inside.window_ends == windows[0]["ends_at"]
    teacher = {**student, "role": "instructor"}
    (t,) = offer([project("ml101", is_course=True, member=teacher)], TYPES, False, NOW)
    assert t.blocked == ""


def render(offers, **kw):
    rows = {
        av.slice_type.name: {
            "description": av.slice_type.description,
            "cpus": 2,
            "memory": "8 GiB",
            "gpu_memory": "—",
            "declared": False,
        }
        for av in TYPES
    }
    spec = dict(
        offers=offers,
        rows=rows,
        ledger=True,
        selected_project=offers[0].id,
        selected="h100.1g.10gb",
        quota_problem=None,
        declared=False,
        min_hours=0.25,
        max_hours=12,
        min_words="15 minutes",
        max_words="12 hours",
        duration_step="0.25",
        default_hours=2.0,
    )
    spec.update(kw)
    return form_template("").render(**spec)


def test_the_form_shows_the_split_and_disables_what_cannot_be_paid():
    poor = project("poor", subsidy_left_cents=5_00)
    html = render(offer([project(), poor], TYPES, False, NOW), default_hours=2.0)
    assert 'id="slicehub-project"' in html and "poor name (poor): HK$5.00 of subsidy left" in html
    assert '<th scope="col">Subsidy (70%) / hour</th>' in html
    assert "HK$3.85" in html and "HK$1.65" in html and "51.9 h" in html
    # in "poor", 2 h of 1g.10gb (HK$7.70 of subsidy) is more than HK$5.00: disabled, with why
    poor_section = html[html.index('data-project="poor"') :]
    assert "The allocation can pay 1 h of it" not in poor_section.split("cpu")[0]
    assert "The allocation can pay 1.2 h of it" in poor_section
    assert poor_section.count('disabled aria-disabled="true"') == 2  # 1g.10gb; h100x1 none free
    # the remembered choice is checked in the remembered project only
    inputs = re.findall(r"<input [^>]*>", html)
    checked = [i for i in inputs if re.search(r"\schecked\b", i)]
    assert len(checked) == 1 and 'id="slice-1-1"' in checked[0]


def test_the_form_for_a_student_between_classes():
    windows = [
        {
            "starts_at": (NOW + timedelta(hours=3)).isoformat(),
            "ends_at": (NOW + timedelta(hours=5)).isoformat(),
        }
    ]
    student = {"role": "student", "cap_left_cents": 20_00, "class_windows": windows}
    html = render(offer([project("ml101", is_course=True, member=student)], TYPES, False, NOW))
    assert "Course ml101 is outside its class windows now." in html
    assert "The next class window opens" in html and 'datetime="2026-11-23T12:00:00+00:00"' in html
    assert html.count('disabled aria-disabled="true"') == 3  # nothing can start

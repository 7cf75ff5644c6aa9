"""A course student outside the class window cannot start: the form says when the next window
opens and offers nothing to start; the REST API refuses with the same sentence; nothing is
held. Inside a window the student starts, and the session ends with the class."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from tests.demo_ledger import add_project

pytestmark = pytest.mark.integration


def course(data, opens: datetime, closes: datetime) -> None:
    add_project(
        data,
        "ml101",
        grant_cents=1000_00,
        grant_until=closes,
        members={"carol": "student"},
        windows=((opens, closes),),
        name="Machine learning 101",
        allowed_slice_types=["h100.1g.10gb"],
        max_concurrent_sessions=50,
        is_course=True,
        member_cap_cents=50_00,
    )


def test_a_student_between_classes_cannot_start_from_the_form_or_the_api(quota_hub):
    hub, data = quota_hub
    hub.create_user("carol")
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    course(data, opens, opens + timedelta(hours=2))

    with hub.login("carol", "slicehub-demo") as browser:
        page = browser.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "Course ml101 is outside its class windows now." in page
    assert "The next class window opens" in page
    assert f'datetime="{opens.isoformat()}"' in page
    assert page.count('disabled aria-disabled="true"') == 1  # its one slice type, closed

    r = hub.start_server("carol", {"project": "ml101", "slice_type": "h100.1g.10gb"})
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert message.startswith("Course ml101 is outside its class windows now.")
    assert f"The next class window opens {opens:%Y-%m-%d %H:%M} UTC." in message
    assert hub.server_model("carol") is None
    with sqlite3.connect(data / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM sessions WHERE username='carol'").fetchone() == (0,)


def test_inside_the_window_the_session_ends_with_the_class(quota_hub):
    hub, data = quota_hub
    hub.create_user("carol")
    now = datetime.now(UTC).replace(microsecond=0)
    course(data, now - timedelta(minutes=5), now + timedelta(minutes=40))
    r = hub.start_server(
        "carol", {"project": "ml101", "slice_type": "h100.1g.10gb", "duration_hours": 2}
    )
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server("carol")
    with sqlite3.connect(data / "ledger.sqlite") as db:
        (end,) = db.execute("SELECT end_at FROM sessions WHERE username='carol'").fetchone()
    assert datetime.fromisoformat(end).replace(tzinfo=UTC) == now + timedelta(minutes=40)
    hub.stop_server("carol")

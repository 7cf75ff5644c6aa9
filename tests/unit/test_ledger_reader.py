"""The reader's query for the Slurm reconcile (`LedgerReader.sessions_for_reconcile`): the ledger
sessions asked for by id, and those started since a moment, as plain views with aware times."""

from slicehub.quota.reader import LedgerReader
from tests.unit.rules_ledger import T0, H, project


def test_sessions_for_reconcile_by_id_and_since(ledger):
    project(ledger, "lab")
    for user in ("ada", "bo", "cy"):
        ledger.add_member("staff", "lab", user, T0)
    old = ledger.open_session("lab", "ada", "", "h100.1g.10gb", H, T0)
    ledger.close_session(old.id, T0 + H / 2, "crashed")
    ledger.open_session("lab", "bo", "", "h100.1g.10gb", H, T0 + H)  # neither asked nor new
    new = ledger.open_session("lab", "cy", "nb", "h100.3g.40gb", H, T0 + 3 * H)

    views = LedgerReader(ledger).sessions_for_reconcile([old.id], since=T0 + 2 * H)

    assert [v["id"] for v in views] == [old.id, new.id]
    first, second = views
    assert first == {
        "id": old.id,
        "project": "lab",
        "username": "ada",
        "slice_type": "h100.1g.10gb",
        "status": "stopped",
        "started_at": T0,
        "metered_until": T0 + H / 2,
    }
    assert second["status"] == "active" and second["started_at"] == T0 + 3 * H
    assert all(v["started_at"].tzinfo and v["metered_until"].tzinfo for v in views)

"""The statuses of applications, change requests and progress reports (slicehub.quota.scheme.
states): property tests that no status ever moves outside its table and that a terminal status
stays terminal, and the table's shape as the contract states it."""

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slicehub.quota.errors import LedgerError
from slicehub.quota.scheme import states
from slicehub.quota.scheme.states import APPLICATION, CHANGE_REQUEST, REPORT, advance

TABLES = {"application": APPLICATION, "change_request": CHANGE_REQUEST, "report": REPORT}
STARTS = {"application": states.DRAFT, "change_request": states.PENDING, "report": states.DUE}
ANY_STATUS = sorted(set(states.WORDS) | {"", "archived", "DRAFT"})


@pytest.mark.parametrize("kind", TABLES)
@given(data=st.data())
def test_no_status_moves_outside_its_table_and_terminal_stays_terminal(kind, data):
    table = TABLES[kind]
    row = SimpleNamespace(status=STARTS[kind])
    path = [row.status]
    for target in data.draw(st.lists(st.sampled_from(ANY_STATUS), max_size=12)):
        before = row.status
        if target in table[before]:
            assert advance(table, row, target, "It") == before
            assert row.status == target
            path.append(target)
        else:
            with pytest.raises(LedgerError) as refused:
                advance(table, row, target, "It")
            assert refused.value.status == 409 and "cannot become" in str(refused.value)
            assert row.status == before  # a refusal changes nothing
        if states.terminal(table, before):
            assert row.status == before
    for a, b in itertools.pairwise(path):
        assert b in table[a]


def test_the_application_table_is_the_contracts():
    d, s, r = states.DRAFT, states.SUBMITTED, states.UNDER_REVIEW
    assert APPLICATION[d] == {s, states.WITHDRAWN}
    assert APPLICATION[s] == {r, states.WITHDRAWN}
    assert APPLICATION[r] == states.DECIDED | {states.WITHDRAWN}
    # nothing goes back to draft, or back at all; decided and withdrawn are the end
    assert all(d not in targets for targets in APPLICATION.values())
    assert all(s not in APPLICATION[x] for x in (r, *states.DECIDED))
    for end in (*states.DECIDED, states.WITHDRAWN):
        assert states.terminal(APPLICATION, end)
    assert CHANGE_REQUEST == {
        states.PENDING: {states.APPROVED, states.DENIED},
        states.APPROVED: set(),
        states.DENIED: set(),
    }
    assert REPORT == {states.DUE: {states.SUBMITTED}, states.SUBMITTED: set()}
    # every status in a table is a key of it (a target always has its own row)
    for table in TABLES.values():
        assert set().union(*table.values()) <= set(table)
        assert all(w in states.WORDS for w in table)


def test_an_unknown_current_status_moves_nowhere():
    row = SimpleNamespace(status="archived")
    with pytest.raises(LedgerError, match="archived; it cannot become submitted"):
        advance(APPLICATION, row, states.SUBMITTED, "Application 3")

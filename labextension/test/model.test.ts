/**
 * The pure core (src/model.ts) under node's built-in test runner: `npm test` compiles it to
 * CommonJS (tsconfig.test.json) and runs `node --test`. No browser, no JupyterLab.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ACTIVITY_REPORT_MS,
  clockOffsetMs,
  describeDuration,
  formatClockTime,
  formatCountdown,
  formatMoney,
  ISession,
  IParking,
  IParkingMemory,
  IStatus,
  itemView,
  IWarning,
  newWarnings,
  NO_PARKING,
  PARKING_POLL_MS,
  parkedNotice,
  parkingNotice,
  parkingStep,
  parseStatus,
  POLL_MS,
  pollDelayMs,
  refusalText,
  rememberWarnings,
  saveCounts,
  secondsLeft,
  shouldReportActivity,
  State,
  warningNotice,
  warningTakenDown
} from '../src/model';

const HK = { locale: 'en-GB', timeZone: 'Asia/Hong_Kong' };
const NOW = Date.parse('2026-11-20T08:00:00Z'); // 16:00 in Hong Kong

function session(overrides: Partial<ISession> = {}): ISession {
  return {
    id: 12,
    project: 'demo-lab',
    status: 'active',
    started_at: '2026-11-20T07:30:00Z',
    end_at: '2026-11-20T09:05:09Z',
    held: { list: 550, subsidy: 385, copay: 165 },
    spent: { list: 120, subsidy: 84, copay: 36 },
    left: { subsidy: 301, copay: 129 },
    ...overrides
  };
}

function status(overrides: Partial<IStatus> = {}): IStatus {
  return {
    slice: {
      type: 'h100.1g.10gb',
      description: '1g.10gb MIG slice of an H100-80GB',
      declared: true
    },
    session: session(),
    project: { slug: 'demo-lab', subsidy_left: 41200, credit_left: 0, policy: 'stop' },
    warnings: [],
    now: '2026-11-20T08:00:00Z',
    quota: 'ok',
    parking: null,
    ...overrides
  };
}

function parking(overrides: Partial<IParking> = {}): IParking {
  return {
    warned_at: '2026-11-20T07:55:00Z',
    park_at: '2026-11-20T08:05:00Z', // 16:05 in Hong Kong, 5 minutes after NOW
    idle_seconds: 1500,
    project: 'demo-lab',
    requested: false,
    ...overrides
  };
}

const ok = (s: IStatus, offsetMs = 0): State => ({ kind: 'ok', status: s, offsetMs });

describe('formatMoney', () => {
  test('cents to HK$ with two decimals, as slicehub.common.money.format_money', () => {
    assert.equal(formatMoney(0), 'HK$0.00');
    assert.equal(formatMoney(5), 'HK$0.05');
    assert.equal(formatMoney(12345), 'HK$123.45');
    assert.equal(formatMoney(-500), '-HK$5.00');
    assert.equal(formatMoney(123456789), 'HK$1,234,567.89');
    assert.equal(formatMoney(100000), 'HK$1,000.00');
  });

  test('refuses what is not an integer number of cents', () => {
    assert.throws(() => formatMoney(1.5), TypeError);
    assert.throws(() => formatMoney(Number.NaN), TypeError);
  });
});

describe('time', () => {
  test('the clock offset corrects a browser clock that runs 90 s fast', () => {
    const offset = clockOffsetMs('2026-11-20T08:00:00Z', NOW + 90_000);
    assert.equal(offset, -90_000);
    assert.equal(secondsLeft('2026-11-20T08:10:00Z', offset, NOW + 90_000), 600);
  });

  test('seconds left never go below zero', () => {
    assert.equal(secondsLeft('2026-11-20T07:00:00Z', 0, NOW), 0);
  });

  test('countdown and words', () => {
    assert.equal(formatCountdown(3909), '1:05:09');
    assert.equal(formatCountdown(59), '0:00:59');
    assert.equal(formatCountdown(-3), '0:00:00');
    assert.equal(describeDuration(3909), '1 hour 5 minutes');
    assert.equal(describeDuration(7200), '2 hours');
    assert.equal(describeDuration(60), '1 minute');
    assert.equal(describeDuration(45), 'less than a minute');
  });

  test('clock times in the given zone, with the zone, and the weekday when not today', () => {
    assert.equal(formatClockTime('2026-11-20T09:05:09Z', NOW, HK), '17:05 GMT+8');
    assert.match(formatClockTime('2026-11-21T09:05:00Z', NOW, HK), /^Sat,? 17:05 GMT\+8$/);
    assert.match(formatClockTime('2026-11-20T09:05:09Z', NOW, { timeZone: 'UTC' }), /UTC/);
  });
});

describe('parseStatus', () => {
  test('accepts the documented shape, with nulls', () => {
    assert.deepEqual(parseStatus(status()), status());
    const none = status({ slice: null, session: null, project: null, quota: 'none' });
    assert.deepEqual(parseStatus(none), none);
  });

  test('refuses a body without the expected shape', () => {
    assert.equal(parseStatus(null), null);
    assert.equal(parseStatus('<html>'), null);
    assert.equal(parseStatus({ ...status(), now: 'yesterday' }), null);
    assert.equal(parseStatus({ ...status(), session: { id: 12 } }), null);
    const floatMoney = session({ left: { subsidy: 3.01, copay: 129 } });
    assert.equal(parseStatus({ ...status(), session: floatMoney }), null);
    assert.equal(parseStatus({ ...status(), warnings: [{ id: 'x' }] }), null);
  });

  test('parking: absent or null is none; the documented object is kept', () => {
    const { parking: _omitted, ...older } = status();
    assert.equal(parseStatus(older)?.parking, null);
    assert.deepEqual(parseStatus(status({ parking: parking() }))?.parking, parking());
    assert.deepEqual(
      parseStatus(status({ parking: parking({ requested: true }) }))?.parking,
      parking({ requested: true })
    );
  });

  test("parking: a park request while the quota service's fields are unknown", () => {
    const bare = parseStatus({ ...status(), parking: { requested: true } });
    assert.deepEqual(bare?.parking, {
      warned_at: null,
      park_at: null,
      idle_seconds: null,
      project: null,
      requested: true
    });
  });

  test('parking: a malformed object is refused like any malformed answer', () => {
    assert.equal(parseStatus({ ...status(), parking: 'soon' }), null);
    assert.equal(parseStatus({ ...status(), parking: parking({ park_at: 'soon' }) }), null);
    assert.equal(parseStatus({ ...status(), parking: { ...parking(), requested: 'yes' } }), null);
    assert.equal(parseStatus({ ...status(), parking: parking({ idle_seconds: -1 }) }), null);
  });
});

describe('refusalText', () => {
  test("the server's sentence, else one that says what happened", () => {
    const message =
      'Project demo-lab has HK$0.20 of subsidy left; 1 h of h100.1g.10gb needs HK$3.30.';
    assert.equal(refusalText(402, { message }), message);
    assert.match(refusalText(503, null), /HTTP 503/);
    assert.match(refusalText(404, '<html>'), /not running in this server/);
  });
});

describe('warnings', () => {
  const w = (id: number, level: string): IWarning => ({
    id,
    level,
    message: `warning ${id}`,
    created_at: '2026-11-20T08:00:00Z'
  });

  test('new warnings are those not seen, oldest first', () => {
    const fresh = newWarnings(
      [w(5, 'budget-95'), w(3, 'budget-80'), w(7, 'end-10min')],
      new Set([5])
    );
    assert.deepEqual(
      fresh.map(x => x.id),
      [3, 7]
    );
    assert.deepEqual(newWarnings([w(3, 'budget-80')], new Set([3])), []);
  });

  test('the remembered ids stay bounded, newest kept', () => {
    const ids = rememberWarnings([1, 2, 3], [w(4, 'budget-80'), w(5, 'budget-95')], 3);
    assert.deepEqual(ids, [3, 4, 5]);
  });

  test('a notice says what happens and when, in at most 140 characters', () => {
    const end = status({ session: session({ end_at: '2026-11-20T08:10:00Z' }) });
    const notice = warningNotice(w(7, 'end-10min'), end, 0, NOW, HK);
    assert.match(notice, /^Less than 10 minutes left/);
    assert.match(notice, /stops at 16:10 GMT\+8 \(in 10 minutes\)/);
    assert.ok(notice.length <= 140, notice);
    const budget = warningNotice(w(3, 'budget-80'), status(), 0, NOW, HK);
    assert.match(
      budget,
      /^80% of this session's budget is used\. The server stops at 17:05 GMT\+8/
    );
    assert.ok(budget.length <= 140, budget);
  });

  test('an unknown level shows the server message, truncated to 140 characters', () => {
    const long = { ...w(9, 'something-new'), message: 'x'.repeat(300) };
    const notice = warningNotice(long, status({ session: null }), 0, NOW, HK);
    assert.equal(notice.length, 140);
    assert.ok(notice.endsWith('…'));
  });
});

describe('itemView', () => {
  test('a running session: slice, countdown, money left', () => {
    const view = itemView(ok(status()), NOW);
    assert.equal(view.visible, true);
    assert.equal(view.text, 'h100.1g.10gb · 1:05:09 left · HK$3.01 subsidy · HK$1.29 co-pay');
    assert.match(
      view.label,
      /1 hour 5 minutes left, HK\$3\.01 of subsidy and HK\$1\.29 of co-pay left/
    );
    assert.equal(view.tone, 'normal');
  });

  test('the countdown uses the server clock', () => {
    // The browser is 5 minutes slow: by the server's clock only 1:00:09 is left.
    assert.match(itemView(ok(status(), 300_000), NOW).text, / 1:00:09 left /);
  });

  test('the last ten minutes are flagged, and an ended session says so', () => {
    const soon = status({ session: session({ end_at: '2026-11-20T08:09:00Z' }) });
    assert.equal(itemView(ok(soon), NOW).tone, 'ending');
    const over = status({ session: session({ end_at: '2026-11-20T07:59:00Z' }) });
    assert.equal(itemView(ok(over), NOW).text, 'h100.1g.10gb · session ended');
  });

  test('no session: the slice only, or nothing without a slice', () => {
    const sliceOnly = itemView(ok(status({ session: null })), NOW);
    assert.equal(sliceOnly.text, 'h100.1g.10gb');
    assert.equal(sliceOnly.visible, true);
    assert.equal(itemView(ok(status({ session: null, slice: null })), NOW).visible, false);
  });

  test('offline and loading', () => {
    const offline = itemView({ kind: 'offline' }, NOW);
    assert.equal(offline.text, 'Slicehub: offline');
    assert.equal(offline.visible, true);
    assert.equal(itemView({ kind: 'loading' }, NOW).visible, false);
  });
});

describe('the poll and browser activity', () => {
  test('every 10 s, every 2 s while a parking stands, 10 s when offline', () => {
    assert.equal(POLL_MS, 10_000);
    assert.equal(PARKING_POLL_MS, 2_000);
    assert.equal(pollDelayMs({ kind: 'loading' }), POLL_MS);
    assert.equal(pollDelayMs({ kind: 'offline' }), POLL_MS);
    assert.equal(pollDelayMs(ok(status())), POLL_MS);
    assert.equal(pollDelayMs(ok(status({ parking: parking() }))), PARKING_POLL_MS);
    assert.equal(
      pollDelayMs(ok(status({ parking: parking({ requested: true }) }))),
      PARKING_POLL_MS
    );
  });

  test('activity is reported at once, then at most once a minute', () => {
    assert.equal(ACTIVITY_REPORT_MS, 60_000);
    assert.equal(shouldReportActivity(null, NOW, true), true);
    assert.equal(shouldReportActivity(NOW, NOW + 1, true), false);
    assert.equal(shouldReportActivity(NOW, NOW + 59_999, true), false);
    assert.equal(shouldReportActivity(NOW, NOW + 60_000, true), true);
  });

  test('a hidden page reports nothing', () => {
    assert.equal(shouldReportActivity(null, NOW, false), false);
    assert.equal(shouldReportActivity(NOW - 3_600_000, NOW, false), false);
  });

  test('a clock set back reports at once instead of staying silent', () => {
    assert.equal(shouldReportActivity(NOW, NOW - 3_600_000, true), true);
  });
});

describe('parkingStep', () => {
  type Step = ReturnType<typeof parkingStep>;
  const kinds = (step: Step) => step.actions.map(a => a.kind);
  /** Feed statuses one after another, as the poll does; the steps of each. */
  function run(statuses: IStatus[], memory: IParkingMemory = NO_PARKING): Step[] {
    const steps: Step[] = [];
    for (const s of statuses) {
      const step = parkingStep(memory, s);
      memory = step.memory;
      steps.push(step);
    }
    return steps;
  }

  test('no parking: nothing to do', () => {
    assert.deepEqual(kinds(parkingStep(NO_PARKING, status())), []);
  });

  test('a new warning is shown once, however often it is polled', () => {
    const warned = status({ parking: parking() });
    const steps = run([warned, warned, warned]);
    assert.deepEqual(steps.map(kinds), [['warn'], [], []]);
    assert.equal(steps[0].memory.standing, '2026-11-20T07:55:00Z');
  });

  test('activity came back: the standing warning is dismissed', () => {
    const steps = run([status({ parking: parking() }), status(), status()]);
    assert.deepEqual(steps.map(kinds), [['warn'], ['dismiss'], []]);
    assert.equal(steps[1].memory.standing, null);
  });

  test('a later warning (new warned_at) is shown again', () => {
    const later = parking({ warned_at: '2026-11-20T09:00:00Z', park_at: '2026-11-20T09:05:00Z' });
    const steps = run([status({ parking: parking() }), status(), status({ parking: later })]);
    assert.deepEqual(steps.map(kinds), [['warn'], ['dismiss'], ['warn']]);
  });

  test('the same warning flickering back is not shown twice', () => {
    const warned = status({ parking: parking() });
    assert.deepEqual(run([warned, status(), warned]).map(kinds), [['warn'], ['dismiss'], []]);
  });

  test('an unreachable quota service says nothing: the warning stays up', () => {
    const down = status({ quota: 'unreachable', parking: null });
    const steps = run([status({ parking: parking() }), down, down]);
    assert.deepEqual(steps.map(kinds), [['warn'], [], []]);
    assert.equal(steps[2].memory.standing, '2026-11-20T07:55:00Z');
  });

  test('after "Keep working" nothing is left to dismiss', () => {
    const first = parkingStep(NO_PARKING, status({ parking: parking() }));
    const kept = warningTakenDown(first.memory);
    assert.equal(kept.standing, null);
    assert.deepEqual(kinds(parkingStep(kept, status({ parking: parking() }))), []);
    assert.deepEqual(kinds(parkingStep(kept, status())), []);
  });

  test('a park request: the warning goes, the documents are saved once per request', () => {
    const requested = status({ parking: parking({ requested: true }) });
    const steps = run([status({ parking: parking() }), requested, requested, requested]);
    assert.deepEqual(steps.map(kinds), [['warn'], ['dismiss', 'save'], [], []]);
  });

  test('a park request with no warning before saves without warning', () => {
    const steps = run([status({ parking: parking({ requested: true }) })]);
    assert.deepEqual(steps.map(kinds), [['save']]);
    const bare = status({
      parking: {
        warned_at: null,
        park_at: null,
        idle_seconds: null,
        project: null,
        requested: true
      }
    });
    assert.deepEqual(run([bare, bare]).map(kinds), [['save'], []]);
  });

  test('a request withdrawn and made again saves again', () => {
    const requested = status({ parking: parking({ requested: true }) });
    const steps = run([requested, status({ parking: parking() }), requested]);
    assert.deepEqual(steps.map(kinds), [['save'], [], ['save']]);
    const cleared = run([requested, status(), requested]);
    assert.deepEqual(cleared.map(kinds), [['save'], [], ['save']]);
  });

  test('the shown warnings stay few', () => {
    let memory = NO_PARKING;
    for (let i = 0; i < 30; i++) {
      const at = new Date(NOW + i * 60_000).toISOString();
      memory = parkingStep(memory, status({ parking: parking({ warned_at: at }) })).memory;
    }
    assert.ok(memory.shown.length <= 10, String(memory.shown.length));
  });
});

describe('what parking says', () => {
  test('the warning: idle time, when, in the local zone, and where the hold goes', () => {
    assert.equal(
      parkingNotice(parking(), 0, NOW, HK),
      'Idle for 25 minutes: this session will be parked at 16:05 GMT+8 (in 5 minutes) ' +
        'and its unused hold returned to demo-lab.'
    );
  });

  test('the countdown uses the server clock', () => {
    // The browser is 2 minutes slow: by the server's clock only 3 minutes are left.
    assert.match(parkingNotice(parking(), 120_000, NOW, HK), /\(in 3 minutes\)/);
    assert.match(parkingNotice(parking(), 600_000, NOW, HK), /\(in less than a minute\)/);
    // Read 8 s after it was made, the warning still says 5 minutes (to the nearest minute).
    assert.match(parkingNotice(parking(), 0, NOW + 8_000, HK), /\(in 5 minutes\)/);
    assert.match(parkingNotice(parking(), 0, NOW + 275_000, HK), /\(in less than a minute\)/);
  });

  test("without the quota service's figures it still says something true", () => {
    const bare = parking({ idle_seconds: null, park_at: null, project: null });
    assert.equal(
      parkingNotice(bare, 0, NOW, HK),
      'This session is idle: it will be parked soon and its unused hold returned to its project.'
    );
  });

  test('a long project name drops the relative time before anything is cut', () => {
    const long = parkingNotice(parking({ project: 'computational-neuroscience-lab' }), 0, NOW, HK);
    assert.ok(long.length <= 140, long);
    assert.match(
      long,
      /parked at 16:05 GMT\+8 and its unused hold returned to computational-neuroscience-lab\.$/
    );
    const huge = parkingNotice(parking({ project: 'x'.repeat(200) }), 0, NOW, HK);
    assert.equal(huge.length, 140);
  });

  test('after saving', () => {
    assert.equal(parkedNotice(3, 0), 'Parking this session: your documents are saved.');
    assert.equal(parkedNotice(0, 0), 'Parking this session: your documents are saved.');
    assert.equal(
      parkedNotice(2, 1),
      'Parking this session: 1 document could not be saved (2 saved); their unsaved changes may be lost.'
    );
    assert.match(parkedNotice(0, 3), /^Parking this session: 3 documents could not be saved;/);
  });
});

describe('saveCounts', () => {
  test("JupyterLab's answer: one entry per saved document", () => {
    assert.deepEqual(
      saveCounts({ ok: true, result: [undefined, undefined], documents: 3, unsavedAfter: 0 }),
      {
        saved: 2,
        failed: 0
      }
    );
  });

  test('a read-only document with changes is still unsaved after the command', () => {
    assert.deepEqual(saveCounts({ ok: true, result: [undefined], documents: 2, unsavedAfter: 1 }), {
      saved: 1,
      failed: 1
    });
  });

  test('no list back: the documents without unsaved changes count as saved', () => {
    assert.deepEqual(saveCounts({ ok: true, result: undefined, documents: 4, unsavedAfter: 1 }), {
      saved: 3,
      failed: 1
    });
  });

  test('a failing command: at least one failed', () => {
    assert.deepEqual(saveCounts({ ok: false, documents: 3, unsavedAfter: 0 }), {
      saved: 2,
      failed: 1
    });
    assert.deepEqual(saveCounts({ ok: false, documents: 3, unsavedAfter: 2 }), {
      saved: 1,
      failed: 2
    });
    assert.deepEqual(saveCounts({ ok: false, documents: 0, unsavedAfter: 0 }), {
      saved: 0,
      failed: 1
    });
  });
});

/**
 * The pure core (src/model.ts) under node's built-in test runner: `npm test` compiles it to
 * CommonJS (tsconfig.test.json) and runs `node --test`. No browser, no JupyterLab.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  clockOffsetMs,
  describeDuration,
  formatClockTime,
  formatCountdown,
  formatMoney,
  ISession,
  IStatus,
  itemView,
  IWarning,
  newWarnings,
  parseStatus,
  refusalText,
  rememberWarnings,
  secondsLeft,
  State,
  warningNotice
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
    slice: { type: 'h100.1g.10gb', description: '1g.10gb MIG slice of an H100-80GB', declared: true },
    session: session(),
    project: { slug: 'demo-lab', subsidy_left: 41200, credit_left: 0, policy: 'stop' },
    warnings: [],
    now: '2026-11-20T08:00:00Z',
    quota: 'ok',
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
});

describe('refusalText', () => {
  test("the server's sentence, else one that says what happened", () => {
    const message = 'Project demo-lab has HK$0.20 of subsidy left; 1 h of h100.1g.10gb needs HK$3.30.';
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
    const fresh = newWarnings([w(5, 'budget-95'), w(3, 'budget-80'), w(7, 'end-10min')], new Set([5]));
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
    assert.match(budget, /^80% of this session's budget is used\. The server stops at 17:05 GMT\+8/);
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
    assert.match(view.label, /1 hour 5 minutes left, HK\$3\.01 of subsidy and HK\$1\.29 of co-pay left/);
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

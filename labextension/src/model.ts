/**
 * The pure core of the Slicehub status extension: the API's types, checking a response's
 * shape, money and time formatting, which warnings are new, and what the status-bar item and
 * the warning notifications say; for idle parking, how often to poll, when browser activity is
 * worth reporting, which parking step (warn, dismiss, save) a status calls for, and what those
 * notifications say.
 *
 * Nothing here touches the DOM, the network or JupyterLab, so it runs under node's test runner
 * (test/model.test.ts). What this module does not decide: how to render (widgets.ts), how to
 * talk to the server (api.ts), how to save documents or show notifications (parking.ts).
 */

/** Money: an integer number of cents of HKD, as the server sends it. Never a float. */
export type Cents = number;

export interface ISlice {
  type: string;
  description: string;
  declared: boolean;
}

export interface IMoneySplit {
  list: Cents;
  subsidy: Cents;
  copay: Cents;
}

export interface ISession {
  id: number;
  project: string;
  status: string;
  started_at: string;
  end_at: string;
  held: IMoneySplit;
  spent: IMoneySplit;
  left: { subsidy: Cents; copay: Cents };
}

export interface IProject {
  slug: string;
  subsidy_left: Cents;
  credit_left: Cents;
  /** "stop": the session stops when the subsidy is spent; "full_price": credit pays on. */
  policy: string;
}

export type WarningLevel = 'budget-80' | 'budget-95' | 'end-10min';

export interface IWarning {
  id: number;
  level: WarningLevel | string;
  message: string;
  created_at: string;
}

/**
 * The status's `parking`: the quota service warned that this idle session will be parked
 * (`warned_at`, `park_at`, `idle_seconds`, `project`), and whether the culler has asked this
 * server to park now (`requested`: save the documents). The quota service's fields are null
 * when it cannot be read while a park request stands.
 */
export interface IParking {
  warned_at: string | null;
  park_at: string | null;
  idle_seconds: number | null;
  project: string | null;
  requested: boolean;
}

/** GET slicehub/api/status */
export interface IStatus {
  slice: ISlice | null;
  session: ISession | null;
  project: IProject | null;
  warnings: IWarning[];
  /** The server's clock when it answered, to correct the browser's clock. */
  now: string;
  quota: 'ok' | 'unreachable' | 'none' | string;
  /** Null unless this session is about to be parked for idleness. */
  parking: IParking | null;
}

/** What the extension knows: nothing yet, the server extension is unreachable, or a status. */
export type State =
  | { kind: 'loading' }
  | { kind: 'offline' }
  | { kind: 'ok'; status: IStatus; offsetMs: number };

/** Formatting options; tests pin them, the browser leaves them undefined (its own locale/zone). */
export interface IClockOptions {
  locale?: string;
  timeZone?: string;
}

export const EXTEND_CHOICES: ReadonlyArray<{ minutes: number; label: string }> = [
  { minutes: 30, label: '30 min' },
  { minutes: 60, label: '1 h' },
  { minutes: 120, label: '2 h' }
];

/** The end-of-session warning comes this close to the end; the item turns amber from then on. */
export const ENDING_SOON_S = 10 * 60;

/** Session statuses after which there is nothing left to count down. */
const ENDED_STATUSES = new Set(['ended', 'stopped', 'closed']);

/** JupyterLab truncates a notification's message at this many characters. */
const NOTIFICATION_MAX = 140;

// ---------------------------------------------------------------------------------------------
// Money

/** 12345 -> "HK$123.45"; -500 -> "-HK$5.00"; 123456789 -> "HK$1,234,567.89" (as slicehub.common.money). */
export function formatMoney(cents: Cents): string {
  if (!Number.isSafeInteger(cents)) {
    throw new TypeError(`money is an integer number of cents, not ${String(cents)}`);
  }
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  const whole = Math.floor(abs / 100)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const part = (abs % 100).toString().padStart(2, '0');
  return `${sign}HK$${whole}.${part}`;
}

// ---------------------------------------------------------------------------------------------
// Checking the server's answers: a malformed body is treated like an unreachable server.

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCents(value: unknown): value is Cents {
  return typeof value === 'number' && Number.isSafeInteger(value);
}

function isTime(value: unknown): value is string {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value));
}

function isSplit(value: unknown, keys: string[]): boolean {
  return isObject(value) && keys.every(key => isCents(value[key]));
}

export function isSession(value: unknown): value is ISession {
  return (
    isObject(value) &&
    typeof value.id === 'number' &&
    typeof value.project === 'string' &&
    typeof value.status === 'string' &&
    isTime(value.started_at) &&
    isTime(value.end_at) &&
    isSplit(value.held, ['list', 'subsidy', 'copay']) &&
    isSplit(value.spent, ['list', 'subsidy', 'copay']) &&
    isSplit(value.left, ['subsidy', 'copay'])
  );
}

function isSlice(value: unknown): value is ISlice {
  return isObject(value) && typeof value.type === 'string' && typeof value.description === 'string';
}

function isProject(value: unknown): value is IProject {
  return (
    isObject(value) &&
    typeof value.slug === 'string' &&
    isCents(value.subsidy_left) &&
    isCents(value.credit_left) &&
    typeof value.policy === 'string'
  );
}

function isWarning(value: unknown): value is IWarning {
  return (
    isObject(value) &&
    isCents(value.id) &&
    typeof value.level === 'string' &&
    typeof value.message === 'string'
  );
}

function isParking(value: unknown): value is IParking {
  const optional = (v: unknown, check: (x: unknown) => boolean) =>
    v === null || v === undefined || check(v);
  return (
    isObject(value) &&
    optional(value.warned_at, isTime) &&
    optional(value.park_at, isTime) &&
    optional(value.idle_seconds, v => typeof v === 'number' && Number.isFinite(v) && v >= 0) &&
    optional(value.project, v => typeof v === 'string') &&
    optional(value.requested, v => typeof v === 'boolean')
  );
}

function normaliseParking(value: IParking): IParking {
  return {
    warned_at: value.warned_at ?? null,
    park_at: value.park_at ?? null,
    idle_seconds: value.idle_seconds ?? null,
    project: value.project ?? null,
    requested: value.requested ?? false
  };
}

/** The status body if it has the documented shape, else null. */
export function parseStatus(body: unknown): IStatus | null {
  if (!isObject(body) || !isTime(body.now)) {
    return null;
  }
  const nullOr = <T>(value: unknown, check: (v: unknown) => v is T): T | null | undefined =>
    value === null || value === undefined ? null : check(value) ? value : undefined;
  const slice = nullOr(body.slice, isSlice);
  const session = nullOr(body.session, isSession);
  const project = nullOr(body.project, isProject);
  const warnings = body.warnings ?? [];
  const parking = nullOr(body.parking, isParking);
  if (
    slice === undefined ||
    session === undefined ||
    project === undefined ||
    parking === undefined ||
    !Array.isArray(warnings) ||
    !warnings.every(isWarning)
  ) {
    return null;
  }
  return {
    slice,
    session,
    project,
    warnings,
    now: body.now as string,
    quota: typeof body.quota === 'string' ? body.quota : 'none',
    parking: parking === null ? null : normaliseParking(parking)
  };
}

/** The sentence to show for a refused POST slicehub/api/extend. */
export function refusalText(httpStatus: number, body: unknown): string {
  if (isObject(body) && typeof body.message === 'string' && body.message.trim()) {
    return body.message.trim();
  }
  if (httpStatus === 404) {
    return 'Slicehub is not running in this server, so the session cannot be extended here.';
  }
  return `The session was not extended (the server answered HTTP ${httpStatus}).`;
}

// ---------------------------------------------------------------------------------------------
// Time

/** Server clock minus browser clock, from the `now` of an answer received at `receivedAtMs`. */
export function clockOffsetMs(serverNow: string, receivedAtMs: number): number {
  return Date.parse(serverNow) - receivedAtMs;
}

/** Whole seconds until `endAt` by the server's clock; never negative. */
export function secondsLeft(endAt: string, offsetMs: number, browserNowMs: number): number {
  return Math.max(0, Math.floor((Date.parse(endAt) - (browserNowMs + offsetMs)) / 1000));
}

/** 3909 -> "1:05:09": a countdown, re-rendered every second. */
export function formatCountdown(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return `${Math.floor(s / 3600)}:${mm}:${ss}`;
}

/** 3909 -> "1 hour 5 minutes"; 45 -> "less than a minute": for screen readers and sentences. */
export function describeDuration(seconds: number): string {
  const minutes = Math.floor(Math.max(0, seconds) / 60);
  if (minutes === 0) {
    return 'less than a minute';
  }
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  const parts: string[] = [];
  if (h) {
    parts.push(`${h} hour${h === 1 ? '' : 's'}`);
  }
  if (m) {
    parts.push(`${m} minute${m === 1 ? '' : 's'}`);
  }
  return parts.join(' ');
}

/**
 * A moment in the browser's time zone with the zone shown: "4:40 PM GMT+8", with the weekday
 * when it is not today ("Sat, 4:40 PM GMT+8").
 */
export function formatClockTime(
  at: string | number,
  browserNowMs: number,
  options: IClockOptions = {}
): string {
  const date = new Date(at);
  const { locale, timeZone } = options;
  const day = (d: Date) => d.toLocaleDateString(locale, { timeZone });
  const sameDay = day(date) === day(new Date(browserNowMs));
  return date.toLocaleTimeString(locale, {
    timeZone,
    weekday: sameDay ? undefined : 'short',
    hour: 'numeric',
    minute: '2-digit',
    timeZoneName: 'short'
  });
}

// ---------------------------------------------------------------------------------------------
// Warnings

/** The warnings not yet shown, oldest first. */
export function newWarnings(warnings: IWarning[], seen: ReadonlySet<number>): IWarning[] {
  return warnings.filter(w => !seen.has(w.id)).sort((a, b) => a.id - b.id);
}

/** The ids worth remembering: the latest `keep`, so the stored list stays small. */
export function rememberWarnings(seen: Iterable<number>, shown: IWarning[], keep = 50): number[] {
  const ids = new Set<number>(seen);
  shown.forEach(w => ids.add(w.id));
  return [...ids].sort((a, b) => a - b).slice(-keep);
}

/** What a warning notification says: what will happen, and when (at most 140 characters). */
export function warningNotice(
  warning: IWarning,
  status: IStatus,
  offsetMs: number,
  browserNowMs: number,
  options: IClockOptions = {}
): string {
  const session = status.session;
  let what: string;
  switch (warning.level) {
    case 'budget-80':
      what = "80% of this session's budget is used.";
      break;
    case 'budget-95':
      what = "95% of this session's budget is used.";
      break;
    case 'end-10min':
      what = 'Less than 10 minutes left in this Slicehub session.';
      break;
    default:
      what = warning.message;
  }
  if (!session) {
    return truncate(what);
  }
  const left = secondsLeft(session.end_at, offsetMs, browserNowMs);
  const at = formatClockTime(session.end_at, browserNowMs, options);
  const when = `The server stops at ${at} (in ${describeDuration(left)}); extend to keep working.`;
  return truncate(`${what} ${when}`);
}

function truncate(text: string): string {
  return text.length <= NOTIFICATION_MAX ? text : `${text.slice(0, NOTIFICATION_MAX - 1)}…`;
}

// ---------------------------------------------------------------------------------------------
// Idle parking: the poll's rhythm, browser activity, and the steps a status calls for

/** The status poll's rhythm; every 2 s while this session is about to be parked. */
export const POLL_MS = 10_000;
export const PARKING_POLL_MS = 2_000;

/** Browser activity (keys, clicks, scrolls) is reported at most this often. */
export const ACTIVITY_REPORT_MS = 60_000;

/** How long to wait before the next status poll. */
export function pollDelayMs(state: State): number {
  return state.kind === 'ok' && state.status.parking !== null ? PARKING_POLL_MS : POLL_MS;
}

/**
 * Whether a key, click or scroll now should be reported: only from a visible page, and at most
 * once a minute since the last report (`null`: none yet). A clock set back reports at once
 * rather than staying silent until it catches up.
 */
export function shouldReportActivity(
  lastReportMs: number | null,
  nowMs: number,
  visible: boolean
): boolean {
  if (!visible) {
    return false;
  }
  return (
    lastReportMs === null || nowMs < lastReportMs || nowMs - lastReportMs >= ACTIVITY_REPORT_MS
  );
}

/** What one tab remembers between status polls about parking. */
export interface IParkingMemory {
  /** `warned_at` of the parking warnings this tab has shown, newest last (a few). */
  shown: string[];
  /** `warned_at` of the warning notification that may still be on screen, or null. */
  standing: string | null;
  /** Whether this tab has saved its documents for the park request that stands. */
  saved: boolean;
}

export const NO_PARKING: IParkingMemory = { shown: [], standing: null, saved: false };

/** How many shown `warned_at` a tab keeps: enough to never repeat one that flickers. */
const SHOWN_KEEP = 10;

export type ParkingAction =
  /** Show the parking warning (replacing any that stands), with "Keep working". */
  | { kind: 'warn'; parking: IParking }
  /** Take the standing warning away: activity came back, or parking began. */
  | { kind: 'dismiss' }
  /** The culler is about to park: save every document (once per request) and say so. */
  | { kind: 'save'; parking: IParking };

/**
 * The parking steps a status calls for, given what this tab did before. Idempotent: the same
 * status twice calls for nothing the second time. A quota service that cannot be read says
 * nothing about parking, so a warning stays up until the service says the session is active.
 */
export function parkingStep(
  memory: IParkingMemory,
  status: IStatus
): { memory: IParkingMemory; actions: ParkingAction[] } {
  const parking = status.parking;
  if (parking === null) {
    if (status.quota === 'unreachable') {
      return { memory, actions: [] };
    }
    return {
      memory: { shown: memory.shown, standing: null, saved: false },
      actions: memory.standing !== null ? [{ kind: 'dismiss' }] : []
    };
  }
  const actions: ParkingAction[] = [];
  let { shown, standing } = memory;
  const warnedAt = parking.warned_at;
  const fresh = warnedAt !== null && !shown.includes(warnedAt);
  if (fresh) {
    shown = [...shown, warnedAt].slice(-SHOWN_KEEP);
  }
  if (parking.requested) {
    if (memory.saved) {
      return { memory: { shown, standing, saved: true }, actions };
    }
    if (standing !== null) {
      actions.push({ kind: 'dismiss' });
    }
    actions.push({ kind: 'save', parking });
    return { memory: { shown, standing: null, saved: true }, actions };
  }
  if (fresh) {
    actions.push({ kind: 'warn', parking });
    standing = warnedAt;
  }
  return { memory: { shown, standing, saved: false }, actions };
}

/** The user pressed "Keep working" (or closed the warning): nothing stands any more. */
export function warningTakenDown(memory: IParkingMemory): IParkingMemory {
  return { ...memory, standing: null };
}

/**
 * What the parking warning says: "Idle for 25 minutes: this session will be parked at
 * 12:35 GMT+8 (in 5 minutes) and its unused hold returned to demo-lab." (at most 140
 * characters; the relative time goes first when the sentence is too long).
 */
export function parkingNotice(
  parking: IParking,
  offsetMs: number,
  browserNowMs: number,
  options: IClockOptions = {}
): string {
  const who =
    parking.idle_seconds !== null
      ? `Idle for ${describeDuration(parking.idle_seconds)}: this session`
      : 'This session is idle: it';
  const whom = parking.project ?? 'its project';
  const tail = ` and its unused hold returned to ${whom}.`;
  if (parking.park_at === null) {
    return truncate(`${who} will be parked soon${tail}`);
  }
  const at = formatClockTime(parking.park_at, browserNowMs, options);
  // To the nearest minute: a warning read a few seconds after it was made still says "in 5".
  const seconds = secondsLeft(parking.park_at, offsetMs, browserNowMs);
  const left = describeDuration(Math.round(seconds / 60) * 60);
  const full = `${who} will be parked at ${at} (in ${left})${tail}`;
  return truncate(full.length <= NOTIFICATION_MAX ? full : `${who} will be parked at ${at}${tail}`);
}

/** What the tab knows after running `docmanager:save-all`. */
export interface ISaveOutcome {
  /** Whether the command finished without an error. */
  ok: boolean;
  /** What the command returned (JupyterLab 4: one entry per document it saved). */
  result?: unknown;
  /** Documents open in the main area (distinct paths) when saving began. */
  documents: number;
  /** Of those, documents that still have unsaved changes after the command. */
  unsavedAfter: number;
}

/** Documents saved and not saved, for `POST slicehub/api/park/saved`. */
export function saveCounts(outcome: ISaveOutcome): { saved: number; failed: number } {
  const documents = Math.max(0, outcome.documents);
  const unsaved = Math.max(0, outcome.unsavedAfter);
  if (outcome.ok) {
    const saved = Array.isArray(outcome.result)
      ? outcome.result.length
      : Math.max(0, documents - unsaved);
    return { saved, failed: unsaved };
  }
  // The command stops at the first failure, so at least one document was not saved.
  const failed = Math.max(1, unsaved);
  return { saved: Math.max(0, documents - failed), failed };
}

/** What the tab says once it saved for parking. */
export function parkedNotice(saved: number, failed: number): string {
  if (failed === 0) {
    return 'Parking this session: your documents are saved.';
  }
  const what =
    failed === 1 ? '1 document could not be saved' : `${failed} documents could not be saved`;
  const also = saved > 0 ? ` (${saved} saved)` : '';
  return truncate(`Parking this session: ${what}${also}; their unsaved changes may be lost.`);
}

// ---------------------------------------------------------------------------------------------
// The status-bar item

export interface IItemView {
  visible: boolean;
  /** The visible text. */
  text: string;
  /** The accessible name: the same facts in words. */
  label: string;
  tone: 'normal' | 'ending' | 'offline';
}

/** What the status-bar item shows for a state at a moment. */
export function itemView(state: State, browserNowMs: number): IItemView {
  if (state.kind === 'loading') {
    return { visible: false, text: '', label: '', tone: 'normal' };
  }
  if (state.kind === 'offline') {
    return {
      visible: true,
      text: 'Slicehub: offline',
      label: 'Slicehub: offline, the session status cannot be read. Open the Slicehub panel',
      tone: 'offline'
    };
  }
  const { slice, session } = state.status;
  const sliceName = slice ? slice.type : 'no GPU slice';
  if (!session) {
    return slice
      ? {
          visible: true,
          text: slice.type,
          label: `Slicehub: ${slice.description}. Open the Slicehub panel`,
          tone: 'normal'
        }
      : { visible: false, text: '', label: '', tone: 'normal' };
  }
  const left = secondsLeft(session.end_at, state.offsetMs, browserNowMs);
  const money = `${formatMoney(session.left.subsidy)} subsidy · ${formatMoney(session.left.copay)} co-pay`;
  const moneyWords =
    `${formatMoney(session.left.subsidy)} of subsidy and ` +
    `${formatMoney(session.left.copay)} of co-pay left`;
  if (left === 0 || ENDED_STATUSES.has(session.status)) {
    return {
      visible: true,
      text: `${sliceName} · session ended`,
      label: `Slicehub: ${sliceName}, the session has ended. Open the Slicehub panel`,
      tone: 'ending'
    };
  }
  return {
    visible: true,
    text: `${sliceName} · ${formatCountdown(left)} left · ${money}`,
    label:
      `Slicehub: ${sliceName}, ${describeDuration(left)} left, ${moneyWords}. ` +
      'Open the Slicehub panel',
    tone: left <= ENDING_SOON_S ? 'ending' : 'normal'
  };
}

/** A project's policy in words, for the panel. */
export function describePolicy(policy: string): string {
  switch (policy) {
    case 'stop':
      return 'sessions stop when the subsidy is spent';
    case 'full_price':
      return 'after the subsidy, sessions go on at full price on credit';
    default:
      return policy;
  }
}

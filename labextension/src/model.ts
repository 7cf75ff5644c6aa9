/**
 * The pure core of the Slicehub status extension: the API's types, checking a response's
 * shape, money and time formatting, which warnings are new, and what the status-bar item and
 * the warning notifications say.
 *
 * Nothing here touches the DOM, the network or JupyterLab, so it runs under node's test runner
 * (test/model.test.ts). What this module does not decide: when to poll, how to render
 * (widgets.ts), how to talk to the server (api.ts).
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

/** GET slicehub/api/status */
export interface IStatus {
  slice: ISlice | null;
  session: ISession | null;
  project: IProject | null;
  warnings: IWarning[];
  /** The server's clock when it answered, to correct the browser's clock. */
  now: string;
  quota: 'ok' | 'unreachable' | 'none' | string;
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
  if (
    slice === undefined ||
    session === undefined ||
    project === undefined ||
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
    quota: typeof body.quota === 'string' ? body.quota : 'none'
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

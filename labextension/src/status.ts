/**
 * The live Slicehub status: polls the server extension every 10 s (every 2 s while the session
 * is about to be parked, model.pollDelayMs), ticks every second (the countdown is re-rendered
 * from the last fetched end time, not re-fetched), and reports the warnings this browser has
 * not shown yet.
 */
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { ExtendResult, extendSession, fetchStatus } from './api';
import {
  clockOffsetMs,
  IWarning,
  newWarnings,
  pollDelayMs,
  rememberWarnings,
  State
} from './model';

const TICK_MS = 1_000;
/** Warning ids already shown, shared by this origin's tabs so a reload does not repeat them. */
const SEEN_KEY = '@slicehub/status:seen-warnings';

export class SlicehubStatus implements IDisposable {
  constructor(private readonly _settings: ServerConnection.ISettings) {}

  get state(): State {
    return this._state;
  }

  /** A new state arrived (after a poll or an extension). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** A second passed: countdowns re-render. */
  get ticked(): ISignal<this, void> {
    return this._ticked;
  }

  /** Warnings not shown in this browser before, oldest first; each is reported once. */
  get warned(): ISignal<this, IWarning[]> {
    return this._warned;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    if (this._ticker === undefined && !this._disposed) {
      this._ticker = setInterval(() => this._ticked.emit(), TICK_MS);
      void this._poll();
    }
  }

  /** Fetch now, outside the poll's rhythm (after an extension, "Keep working", the panel). */
  async refresh(): Promise<void> {
    const fetched = await fetchStatus(this._settings);
    if (this._disposed) {
      return;
    }
    if (fetched === null) {
      this._setState({ kind: 'offline' });
      return;
    }
    const { status, receivedAtMs } = fetched;
    this._setState({ kind: 'ok', status, offsetMs: clockOffsetMs(status.now, receivedAtMs) });
    const fresh = newWarnings(status.warnings, this._seenWarnings());
    if (fresh.length) {
      this._storeSeen(rememberWarnings(this._seenWarnings(), fresh));
      this._warned.emit(fresh);
    }
  }

  /** Ask for `minutes` more; on success the new end time is shown at once. */
  async extend(minutes: number): Promise<ExtendResult> {
    const result = await extendSession(this._settings, minutes);
    const state = this._state;
    if (result.ok && state.kind === 'ok' && !this._disposed) {
      this._setState({ ...state, status: { ...state.status, session: result.session } });
      void this.refresh();
    }
    return result;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    clearInterval(this._ticker);
    clearTimeout(this._next);
    Signal.clearData(this);
  }

  private async _poll(): Promise<void> {
    try {
      await this.refresh();
    } catch (error) {
      // A bug in rendering must not stop the polling.
      console.error('slicehub: status refresh failed', error);
    }
    if (!this._disposed) {
      this._next = setTimeout(() => void this._poll(), pollDelayMs(this._state));
    }
  }

  private _setState(state: State): void {
    this._state = state;
    this._changed.emit();
  }

  private _seenWarnings(): Set<number> {
    try {
      const ids: unknown = JSON.parse(window.localStorage.getItem(SEEN_KEY) ?? '[]');
      if (Array.isArray(ids)) {
        ids.filter(id => typeof id === 'number').forEach(id => this._seen.add(id));
      }
    } catch {
      // Storage disabled or corrupt: remember for this page only.
    }
    return this._seen;
  }

  private _storeSeen(ids: number[]): void {
    ids.forEach(id => this._seen.add(id));
    try {
      window.localStorage.setItem(SEEN_KEY, JSON.stringify(ids));
    } catch {
      // As above: the in-memory set still prevents repeats on this page.
    }
  }

  private _state: State = { kind: 'loading' };
  private _seen = new Set<number>();
  private _disposed = false;
  private _ticker: ReturnType<typeof setInterval> | undefined = undefined;
  private _next: ReturnType<typeof setTimeout> | undefined = undefined;
  private _changed = new Signal<this, void>(this);
  private _ticked = new Signal<this, void>(this);
  private _warned = new Signal<this, IWarning[]>(this);
}

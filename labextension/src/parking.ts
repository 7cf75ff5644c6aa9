/**
 * Idle parking in the browser: the user's keys, clicks, scrolls and touches reported to the
 * server extension (at most once a minute, from a visible page), the parking warning with its
 * "Keep working" action, and saving every document when the culler is about to park.
 *
 * What to do and what to say is decided in model.ts (`shouldReportActivity`, `parkingStep`,
 * `parkingNotice`, `saveCounts`, `parkedNotice`); this module only listens, posts and shows.
 * Whether a session is idle, and when it is parked, is the server's decision, not this tab's.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';

import { reportActivity, reportSaved } from './api';
import {
  IParking,
  IParkingMemory,
  ISaveOutcome,
  NO_PARKING,
  ParkingAction,
  parkedNotice,
  parkingNotice,
  parkingStep,
  saveCounts,
  shouldReportActivity,
  warningTakenDown
} from './model';
import { SlicehubStatus } from './status';

/** JupyterLab's own command: saves every writable document open in the main area. */
export const SAVE_ALL_COMMAND = 'docmanager:save-all';

/** What counts as the user being here. Listened to in the capture phase, passively. */
const ACTIVITY_EVENTS = ['keydown', 'mousedown', 'pointerdown', 'wheel', 'touchstart'];
const LISTEN: AddEventListenerOptions = { capture: true, passive: true };

/** The user's presence in this tab, reported as `POST slicehub/api/activity`. */
export class BrowserActivity implements IDisposable {
  constructor(
    private readonly _settings: ServerConnection.ISettings,
    private readonly _document: Document = document
  ) {}

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    if (!this._listening && !this._disposed) {
      ACTIVITY_EVENTS.forEach(type => this._document.addEventListener(type, this._onEvent, LISTEN));
      this._listening = true;
    }
  }

  /** "Keep working": reported at once, as a keep, and the minute starts again from now. */
  keep(): Promise<boolean> {
    this._lastReportMs = Date.now();
    return reportActivity(this._settings, true);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    ACTIVITY_EVENTS.forEach(type =>
      this._document.removeEventListener(type, this._onEvent, LISTEN)
    );
  }

  private _onEvent = (): void => {
    const now = Date.now();
    const visible = this._document.visibilityState === 'visible';
    if (!shouldReportActivity(this._lastReportMs, now, visible)) {
      return;
    }
    // Counted when sent, not when answered: a slow or failing server is not asked again sooner.
    this._lastReportMs = now;
    void reportActivity(this._settings, false);
  };

  private _lastReportMs: number | null = null;
  private _listening = false;
  private _disposed = false;
}

/** A widget of the main area that shows a document (JupyterLab's DocumentWidget), by shape. */
interface IDocumentLike {
  context?: { path?: unknown; model?: { dirty?: unknown } };
}

/** The documents open in the main area: path -> whether it has unsaved changes. */
function openDocuments(app: JupyterFrontEnd): Map<string, boolean> {
  const documents = new Map<string, boolean>();
  for (const widget of app.shell.widgets('main')) {
    const context = (widget as IDocumentLike).context;
    if (context && typeof context.path === 'string') {
      const dirty = context.model?.dirty === true;
      documents.set(context.path, (documents.get(context.path) ?? false) || dirty);
    }
  }
  return documents;
}

function countUnsaved(documents: Map<string, boolean>): number {
  return [...documents.values()].filter(dirty => dirty).length;
}

/** Follows the status's `parking` and carries out the steps model.parkingStep calls for. */
export class ParkingController implements IDisposable {
  constructor(
    private readonly _app: JupyterFrontEnd,
    private readonly _status: SlicehubStatus,
    private readonly _activity: BrowserActivity,
    private readonly _settings: ServerConnection.ISettings
  ) {
    this._status.changed.connect(this._onChanged, this);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._status.changed.disconnect(this._onChanged, this);
    this._dismissWarning();
  }

  private _onChanged(): void {
    const state = this._status.state;
    if (state.kind !== 'ok' || this._disposed) {
      return;
    }
    const { memory, actions } = parkingStep(this._memory, state.status);
    this._memory = memory;
    actions.forEach(action => {
      try {
        this._carryOut(action, state.offsetMs);
      } catch (error) {
        // A notification that cannot be shown must not stop the status poll.
        console.error(`slicehub: parking step ${action.kind} failed`, error);
      }
    });
  }

  private _carryOut(action: ParkingAction, offsetMs: number): void {
    switch (action.kind) {
      case 'warn':
        this._warn(action.parking, offsetMs);
        break;
      case 'dismiss':
        this._dismissWarning();
        break;
      case 'save':
        void this._save();
        break;
    }
  }

  private _warn(parking: IParking, offsetMs: number): void {
    this._dismissWarning();
    this._warningId = Notification.warning(parkingNotice(parking, offsetMs, Date.now()), {
      autoClose: false,
      actions: [
        {
          label: 'Keep working',
          caption: 'Tell Slicehub you are still here, so this session is not parked',
          displayType: 'accent',
          callback: () => this._keepWorking()
        }
      ]
    });
  }

  private _keepWorking(): void {
    this._dismissWarning();
    this._memory = warningTakenDown(this._memory);
    void this._activity.keep().then(() => this._status.refresh());
  }

  private _dismissWarning(): void {
    if (this._warningId !== null) {
      Notification.dismiss(this._warningId);
      this._warningId = null;
    }
  }

  /** Save everything through JupyterLab's own command, tell the server, then tell the user. */
  private async _save(): Promise<void> {
    let outcome: ISaveOutcome;
    let documents = new Map<string, boolean>();
    try {
      documents = openDocuments(this._app);
      if (!this._app.commands.hasCommand(SAVE_ALL_COMMAND)) {
        throw new Error(`JupyterLab has no command ${SAVE_ALL_COMMAND}`);
      }
      const result = await this._app.commands.execute(SAVE_ALL_COMMAND);
      const after = openDocuments(this._app);
      outcome = { ok: true, result, documents: documents.size, unsavedAfter: countUnsaved(after) };
    } catch (error) {
      console.warn('slicehub: saving the documents before parking failed', error);
      let unsavedAfter = countUnsaved(documents);
      try {
        unsavedAfter = countUnsaved(openDocuments(this._app));
      } catch {
        // Keep the count from before saving.
      }
      outcome = { ok: false, documents: documents.size, unsavedAfter };
    }
    const { saved, failed } = saveCounts(outcome);
    await reportSaved(this._settings, saved, failed);
    if (this._disposed) {
      return;
    }
    const notify = failed === 0 ? Notification.info : Notification.warning;
    notify(parkedNotice(saved, failed), { autoClose: false });
  }

  private _memory: IParkingMemory = NO_PARKING;
  private _warningId: string | null = null;
  private _disposed = false;
}

/**
 * The Slicehub server extension's endpoints, relative to the Jupyter server's base URL: the
 * status and Extend, and for idle parking the browser's activity and its documents saved.
 *
 * Failures are values, not exceptions: a status that cannot be read is `null` (the item shows
 * "Slicehub: offline"), a refused extension carries the server's sentence, an activity or
 * saved report that did not arrive is `false`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ISession, IStatus, isSession, parseStatus, refusalText } from './model';

export const STATUS_PATH = 'slicehub/api/status';
export const EXTEND_PATH = 'slicehub/api/extend';
export const ACTIVITY_PATH = 'slicehub/api/activity';
export const PARK_SAVED_PATH = 'slicehub/api/park/saved';

/**
 * This tab's name for the server extension (`X-Slicehub-Client`, letters and digits): it counts
 * the tabs that poll the status, and waits for each of them to save before a parking.
 */
export const CLIENT_ID = `tab-${Math.random().toString(36).slice(2, 12)}${Date.now().toString(36)}`;
const CLIENT_HEADERS = { 'X-Slicehub-Client': CLIENT_ID };

export interface IFetchedStatus {
  status: IStatus;
  /** The browser's clock when the answer arrived, to compute the clock offset. */
  receivedAtMs: number;
}

export type ExtendResult = { ok: true; session: ISession } | { ok: false; message: string };

async function readJson(response: Response): Promise<unknown> {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** GET the status; null when the server extension is missing, down, or answers nonsense. */
export async function fetchStatus(
  settings: ServerConnection.ISettings
): Promise<IFetchedStatus | null> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      URLExt.join(settings.baseUrl, STATUS_PATH),
      { method: 'GET', cache: 'no-store', headers: CLIENT_HEADERS },
      settings
    );
  } catch (error) {
    console.debug('slicehub: status unreachable', error);
    return null;
  }
  const receivedAtMs = Date.now();
  if (!response.ok) {
    return null;
  }
  const status = parseStatus(await readJson(response));
  if (status === null) {
    console.warn('slicehub: the status answer does not have the expected shape');
    return null;
  }
  return { status, receivedAtMs };
}

/** POST an extension of `minutes`; the new session, or the refusal's reason. */
export async function extendSession(
  settings: ServerConnection.ISettings,
  minutes: number
): Promise<ExtendResult> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      URLExt.join(settings.baseUrl, EXTEND_PATH),
      { method: 'POST', body: JSON.stringify({ minutes }) },
      settings
    );
  } catch (error) {
    console.debug('slicehub: extend unreachable', error);
    return {
      ok: false,
      message: 'Slicehub cannot be reached, so the session was not extended. Try again.'
    };
  }
  const body = await readJson(response);
  if (response.ok && body !== null && typeof body === 'object' && 'session' in body) {
    const session = (body as { session: unknown }).session;
    if (isSession(session)) {
      return { ok: true, session };
    }
  }
  if (response.ok) {
    return { ok: false, message: 'Slicehub answered, but without the extended session.' };
  }
  return { ok: false, message: refusalText(response.status, body) };
}

/** POST a JSON body whose answer does not matter; whether the server took it. */
async function postReport(
  settings: ServerConnection.ISettings,
  path: string,
  body: unknown
): Promise<boolean> {
  try {
    const response = await ServerConnection.makeRequest(
      URLExt.join(settings.baseUrl, path),
      { method: 'POST', body: JSON.stringify(body), headers: CLIENT_HEADERS },
      settings
    );
    if (!response.ok) {
      console.debug(`slicehub: ${path} answered HTTP ${response.status}`);
    }
    return response.ok;
  } catch (error) {
    console.debug(`slicehub: ${path} unreachable`, error);
    return false;
  }
}

/** The user is here: a key, click or scroll (`keep` false), or "Keep working" (`keep` true). */
export function reportActivity(
  settings: ServerConnection.ISettings,
  keep: boolean
): Promise<boolean> {
  return postReport(settings, ACTIVITY_PATH, { keep });
}

/** This tab saved its documents for parking: how many were saved and how many were not. */
export function reportSaved(
  settings: ServerConnection.ISettings,
  saved: number,
  failed: number
): Promise<boolean> {
  return postReport(settings, PARK_SAVED_PATH, { saved, failed });
}

/**
 * The Slicehub server extension's two endpoints, relative to the Jupyter server's base URL.
 *
 * Failures are values, not exceptions: a status that cannot be read is `null` (the item shows
 * "Slicehub: offline"), a refused extension carries the server's sentence.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ISession, IStatus, isSession, parseStatus, refusalText } from './model';

export const STATUS_PATH = 'slicehub/api/status';
export const EXTEND_PATH = 'slicehub/api/extend';

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
      { method: 'GET', cache: 'no-store' },
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

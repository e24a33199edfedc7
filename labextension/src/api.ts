/**
 * The one way the extension talks to the server: the server extension's REST
 * routes under `nbguard/api/`, with Jupyter's own authentication (cookie and
 * XSRF token, added by ServerConnection). Nothing here calls the guard service
 * directly: the browser never holds a token for it.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { IErrorBody } from './model';

/** The REST namespace of the server extension. */
export const API_NAMESPACE = 'nbguard/api';

/**
 * A refusal or failure of a call, with the guard's error body when there was
 * one (status, code, message, and for a denial its decision and step-up page).
 */
export class GuardResponseError extends ServerConnection.ResponseError {
  constructor(
    response: Response,
    readonly error: IErrorBody
  ) {
    super(response, error.message);
    this.name = 'GuardResponseError';
  }

  /** The HTTP status of the answer. */
  get status(): number {
    return this.response.status;
  }
}

/**
 * Call `nbguard/api/<endPoint>` and return its JSON body.
 *
 * Throws `GuardResponseError` (a `ServerConnection.ResponseError`) for any
 * answer that is not 2xx, with the error body's message (or one made from the
 * status when the body is not the guard's JSON, e.g. a proxy's error page), and
 * `ServerConnection.NetworkError` when the server cannot be reached.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let body: unknown = undefined;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  if (!response.ok) {
    throw new GuardResponseError(response, errorOf(response.status, body));
  }
  if (body === undefined) {
    throw new GuardResponseError(response, {
      status: 502,
      code: 'bad_answer',
      message: 'The server answered without JSON.'
    });
  }
  return body as T;
}

/** The `error` member of an error answer, or one made from its status. */
export function errorOf(status: number, body: unknown): IErrorBody {
  const error = (body as { error?: Partial<IErrorBody> } | undefined)?.error;
  if (error && typeof error === 'object' && typeof error.message === 'string') {
    return {
      ...error,
      status: typeof error.status === 'number' ? error.status : status,
      code: typeof error.code === 'string' ? error.code : 'error',
      message: error.message
    };
  }
  return {
    status,
    code: 'error',
    message:
      status === 404
        ? 'nbguard is not active in this server (no guard configured).'
        : `The server answered ${status}.`
  };
}

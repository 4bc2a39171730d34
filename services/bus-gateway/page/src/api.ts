/*
 * The control API as the page uses it: the token from the session (never in a URL), sent as a Bearer
 * header on every request to this origin only. A cross-site page cannot send it (it cannot read this
 * origin's session storage), and the API refuses other origins: CSRF-safe by construction.
 */

const TOKEN_KEY = 'aico-update-token';

export function storedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function storeToken(token: string | undefined): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export interface Reply {
  accepted?: boolean;
  message?: string;
  code?: string;
  [key: string]: unknown;
}

export class Api {
  readonly token: string;

  constructor(token: string) {
    this.token = token;
  }

  async get<T>(path: string): Promise<T> {
    return this.#send<T>('GET', path);
  }

  /** A command: the reply, accepted or refused (409/400 carry the reason, not an exception). */
  async command(path: string, body: unknown = {}, method = 'POST'): Promise<Reply> {
    try {
      return await this.#send<Reply>(method, path, body);
    } catch (error) {
      if (error instanceof ApiError && error.status !== 401) {
        return { accepted: false, code: error.code, message: error.message };
      }
      throw error;
    }
  }

  async #send<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`/api/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await response.json().catch(() => ({}))) as T & {
      error?: { code: string; message: string };
    };
    if (response.status === 409 || (response.status === 400 && (json as Reply).accepted === false))
      return json;
    if (!response.ok) {
      const error = json.error ?? { code: `HTTP_${response.status}`, message: response.statusText };
      throw new ApiError(response.status, error.code, error.message);
    }
    return json;
  }

  /** The server-sent event stream, read with fetch (EventSource cannot send the token). */
  async events(onEvent: (topic: string, data: unknown) => void, signal: AbortSignal): Promise<void> {
    const response = await fetch('/api/v1/events', {
      headers: { authorization: `Bearer ${this.token}` },
      signal,
    });
    if (!response.ok || !response.body) throw new ApiError(response.status, 'EVENTS', 'no event stream');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const topic = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (topic && data) {
          try {
            onEvent(topic, JSON.parse(data));
          } catch {
            // not JSON: not an event of ours
          }
        }
        end = buffer.indexOf('\n\n');
      }
    }
  }
}

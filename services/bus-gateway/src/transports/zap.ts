import { Router } from 'zeromq';

/*
 * Who may talk to the broker the gateway runs (bus.zeromq.bind_broker). CurveZMQ encrypts, but without a
 * ZAP handler every client key is accepted. This handler (ZMQ RFC 27, on the inproc endpoint libzmq
 * asks) admits only allow-listed client public keys, per socket:
 *
 * - the publish socket (where requests come in): keys with full access only;
 * - the subscribe socket (where events go out): full and read-only keys.
 *
 * A peer the handler refuses completes no handshake: it gets no answer and can send nothing. Per message,
 * ZeroMQ's forwarding sockets do not tell whose key sent it, so access is decided per socket: a read-only
 * peer listens, and cannot ask for anything at all.
 */

export const ZAP_DOMAINS = { publish: 'aico-publish', subscribe: 'aico-subscribe' } as const;

export interface ClientKeys {
  full: ReadonlySet<string>;
  readOnly: ReadonlySet<string>;
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 (ZMQ RFC 32) of bytes whose length is a multiple of 4: how CURVE keys are written. */
export function z85Encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value =
      (((bytes[i] as number) << 24) >>> 0) +
      ((bytes[i + 1] as number) << 16) +
      ((bytes[i + 2] as number) << 8) +
      (bytes[i + 3] as number);
    const chunk: string[] = [];
    for (let j = 0; j < 5; j++) {
      chunk.unshift(Z85[value % 85] as string);
      value = Math.floor(value / 85);
    }
    out += chunk.join('');
  }
  return out;
}

export interface ZapDecision {
  key: string;
  domain: string;
  allowed: boolean;
}

/** Serves ZAP requests until closed; `onDecision` sees every one (metrics, the operator's list). */
export class ZapHandler {
  readonly #socket = new Router({ linger: 0 });
  readonly #keys: () => ClientKeys;
  readonly #onDecision: (decision: ZapDecision) => void;

  constructor(keys: () => ClientKeys, onDecision: (decision: ZapDecision) => void) {
    this.#keys = keys;
    this.#onDecision = onDecision;
  }

  async start(): Promise<void> {
    await this.#socket.bind('inproc://zeromq.zap.01');
    void this.#serve().catch(() => undefined);
  }

  async #serve(): Promise<void> {
    for await (const frames of this.#socket) {
      const [routing, delimiter, version, requestId, domain, , , mechanism, credentials] = frames;
      if (!routing || !delimiter || !requestId) continue;
      const domainName = domain?.toString() ?? '';
      let allowed = false;
      let key = '';
      if (version?.toString() === '1.0' && mechanism?.toString() === 'CURVE' && credentials?.length === 32) {
        key = z85Encode(credentials);
        const keys = this.#keys();
        allowed = keys.full.has(key) || (domainName === ZAP_DOMAINS.subscribe && keys.readOnly.has(key));
      }
      this.#onDecision({ key, domain: domainName, allowed });
      await this.#socket.send([
        routing,
        delimiter,
        '1.0',
        requestId,
        allowed ? '200' : '400',
        allowed ? 'OK' : 'client key not allowed',
        allowed ? key : '',
        '',
      ]);
    }
  }

  close(): void {
    this.#socket.close();
  }
}

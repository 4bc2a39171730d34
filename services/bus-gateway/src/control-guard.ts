import { createHash, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { keptSecret, type Logger, parseSecret, randomSecret } from '@aico-update/shared';
import type { NextFunction, Request, RequestHandler, Response } from 'express';

/*
 * Who may use the control API: whoever holds its token, from a page or client that names an allowed
 * host. Every request to /api needs `Authorization: Bearer <token>` (compared in constant time), a Host
 * on `control.allowed_hosts` (DNS rebinding: a hostile name pointing at this machine is refused), and,
 * when a browser sends one, the API's own Origin (CSRF: a page of any other origin is refused). State-changing requests must be
 * `application/json`: an HTML form or a `no-cors` fetch cannot send that without a preflight. Requests
 * are rate-limited per client address. There is no anonymous mode.
 */

const TOKEN_FILE = 'control-token';

/**
 * The token: `control.token` when configured, else the one kept in the gateway's state folder, made on
 * first start (256 random bits, mode 0600). `docker compose exec bus-gateway cat <state_dir>/control-token`
 * shows it.
 */
export async function controlToken(
  configured: string,
  stateDir: string,
  logger: Logger,
): Promise<{ token: string; source: 'config' | 'file' | 'generated'; file: string }> {
  const file = join(stateDir, TOKEN_FILE);
  if (configured) return { token: configured, source: 'config', file };
  const kept = await keptSecret(file, { parse: parseSecret, make: randomSecret });
  if (kept.replaced) logger.warn({ file }, 'the stored control token was too short; made a new one');
  return { token: kept.value, source: kept.made ? 'generated' : 'file', file };
}

export interface GuardOptions {
  token: string;
  /** Host names (no port) a request may name in Host and Origin. */
  allowedHosts: readonly string[];
  /** Per client address; bursts of twice that. */
  requestsPerSecond: number;
  /** Every refusal, by reason (the metric operators alert on). */
  onRefused?: (reason: 'rate' | 'host' | 'origin' | 'token' | 'media_type') => void;
}

function refuse(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

/** The host name of a Host header or an Origin (`[::1]:8084` → `::1`), lower case. */
export function hostNameOf(value: string): string | undefined {
  try {
    const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
    return url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return undefined;
  }
}

export function controlGuard(options: GuardOptions): RequestHandler[] {
  const refused = options.onRefused ?? (() => undefined);
  const allowed = new Set(options.allowedHosts.map((h) => h.toLowerCase()));
  const expected = createHash('sha256').update(options.token).digest();
  const buckets = new Map<string, { tokens: number; at: number }>();
  const rate = options.requestsPerSecond;

  const limit: RequestHandler = (req, res, next) => {
    const key = req.socket.remoteAddress ?? 'unknown';
    const now = performance.now();
    const bucket = buckets.get(key) ?? { tokens: rate * 2, at: now };
    bucket.tokens = Math.min(rate * 2, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    buckets.set(key, bucket);
    if (buckets.size > 10_000) buckets.delete(buckets.keys().next().value as string);
    if (bucket.tokens < 1) {
      refused('rate');
      res.setHeader('retry-after', '1');
      return refuse(res, 429, 'RATE_LIMITED', `more than ${rate} requests per second from ${key}; slow down`);
    }
    bucket.tokens -= 1;
    next();
  };

  const hosts: RequestHandler = (req, res, next) => {
    const host = hostNameOf(req.get('host') ?? '');
    if (!host || !allowed.has(host)) {
      refused('host');
      return refuse(
        res,
        403,
        'HOST_NOT_ALLOWED',
        `this API answers only requests addressed to ${[...allowed].join(', ')} (control.allowed_hosts); add the name you use to reach it`,
      );
    }
    // A browser names the page's origin: only the API's own (its own page, issue 18) may drive it. Any
    // other origin, also another web app on this machine's loopback at another port, is cross-site.
    const origin = req.get('origin');
    if (origin !== undefined) {
      let same = false;
      try {
        same = new URL(origin).host === new URL(`http://${req.get('host') ?? ''}`).host;
      } catch {
        same = false;
      }
      if (!same) {
        refused('origin');
        return refuse(
          res,
          403,
          'ORIGIN_NOT_ALLOWED',
          `requests from pages of ${origin} are not accepted (control.allowed_hosts)`,
        );
      }
    }
    next();
  };

  const authenticate: RequestHandler = (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const given = createHash('sha256')
      .update(header.startsWith('Bearer ') ? header.slice(7) : '')
      .digest();
    if (!header.startsWith('Bearer ') || !timingSafeEqual(given, expected)) {
      refused('token');
      return refuse(
        res,
        401,
        'UNAUTHORIZED',
        'send Authorization: Bearer <token> (the control token: control.token, or the file control-token in the gateway’s state folder)',
      );
    }
    next();
  };

  const jsonOnly: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    const type = (req.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
    if (req.method !== 'GET' && req.method !== 'HEAD' && type !== 'application/json') {
      refused('media_type');
      return refuse(
        res,
        415,
        'UNSUPPORTED_MEDIA_TYPE',
        'state-changing requests must be sent as application/json',
      );
    }
    next();
  };

  return [limit, hosts, authenticate, jsonOnly];
}

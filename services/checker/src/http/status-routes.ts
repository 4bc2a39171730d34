import type { TufClient } from '@aico-update/tuf-client';
import type { Express } from 'express';
import type { RedisCheckState } from '../adapters/redis-state.ts';
import type { CheckRequests } from '../handlers/check-requests.ts';

/** GET /status (installed versions, last check, trusted metadata) and POST /check (forced with ?forced=true). */
export function statusRoutes(deps: { state: RedisCheckState; client: TufClient; requests: CheckRequests }) {
  return (app: Express) => {
    app.get('/status', async (_req, res, next) => {
      try {
        const trusted = await deps.client.trusted();
        res.json({
          installed: await deps.state.get(),
          last_check: (await deps.state.lastCheck()) ?? null,
          trusted_metadata: trusted
            ? { versions: trusted.versions, expires_at: trusted.expiresAt.toISOString() }
            : null,
        });
      } catch (error) {
        next(error);
      }
    });
    app.post('/check', async (req, res, next) => {
      try {
        res.json(await deps.requests.handle({ v: 1, forced: req.query.forced === 'true', source: 'http' }));
      } catch (error) {
        next(error);
      }
    });
  };
}

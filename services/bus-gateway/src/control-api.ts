import {
  AppError,
  type CheckResponse,
  type CommandReply,
  ExtraTopics,
  type NatsConnection,
  StateKeys,
  SUBJECT_ROOT,
  Subjects,
  sendCommand,
  Topics,
} from '@aico-update/shared';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Redis } from 'ioredis';

/*
 * The local control API for operators and frontends on the LAN (`/api/v1`): status, history, check,
 * install, rollback, and a server-sent-events stream of every update event. Install and rollback go
 * through the same commands as the bus: the installer decides what may be installed.
 */

export interface ControlApiDeps {
  redis: Redis;
  nc: NatsConnection;
  token: string;
  commandTimeoutMs: number;
  /** The newest progress events seen (download and install), for status. */
  progress: () => Record<string, unknown>;
  bus: () => { mode: string; connected: boolean; problem: string | undefined };
}

export function controlApi(deps: ControlApiDeps): (app: Express) => void {
  return (app) => {
    const api = express.Router();
    api.use(express.json({ limit: '16kb' }));
    if (deps.token) {
      api.use((req, res, next) => {
        if (req.get('authorization') === `Bearer ${deps.token}`) return next();
        res
          .status(401)
          .json({ error: { code: 'UNAUTHORIZED', message: 'send Authorization: Bearer <control.token>' } });
      });
    }
    const wrap =
      (handler: (req: Request, res: Response) => Promise<void>) =>
      (req: Request, res: Response, next: NextFunction) =>
        void handler(req, res).catch((error: unknown) => {
          if (error instanceof AppError) {
            const status = error.code === 'BAD_REQUEST' ? 400 : error.code === 'NO_RESPONDER' ? 503 : 502;
            res.status(status).json({ error: { code: error.code, message: error.message } });
          } else next(error);
        });

    api.get(
      '/status',
      wrap(async (_req, res) => {
        const [installed, lastCheck, downloaded] = await Promise.all([
          deps.redis.hgetall(StateKeys.installed),
          deps.redis.get(StateKeys.lastCheck),
          deps.redis.hgetall(StateKeys.downloaded),
        ]);
        const check = lastCheck ? (JSON.parse(lastCheck) as CheckResponse) : undefined;
        res.json({
          installed,
          available: Object.fromEntries(
            (check?.components ?? []).flatMap((c) => (c.update ? [[c.component, c.update.version]] : [])),
          ),
          last_check: check
            ? { checked_at: check.checked_at, outcome: check.outcome, error: check.error ?? null }
            : null,
          downloaded: Object.keys(downloaded).sort(),
          progress: deps.progress(),
          bus: deps.bus(),
        });
      }),
    );

    api.get(
      '/history',
      wrap(async (req, res) => {
        const limit = Math.min(1000, Math.max(1, Number(req.query.limit) || 50));
        const entries = await deps.redis.lrange(StateKeys.installHistory, 0, limit - 1);
        res.json({ history: entries.map((e) => JSON.parse(e)) });
      }),
    );

    api.post(
      '/check',
      wrap(async (req, res) => {
        const response = await sendCommand<CheckResponse>(
          deps.nc,
          Topics.checkRequest,
          { forced: req.query.forced === 'true' || req.body?.forced === true, source: 'control-api' },
          deps.commandTimeoutMs,
        );
        res.json(response);
      }),
    );

    const command = (topic: typeof Topics.installRequest | typeof ExtraTopics.rollbackRequest) =>
      wrap(async (req, res) => {
        const reply = await sendCommand<CommandReply>(
          deps.nc,
          topic,
          { ...(req.body ?? {}), source: 'control-api' },
          deps.commandTimeoutMs,
        );
        res.status(reply.accepted ? 202 : 409).json(reply);
      });
    api.post('/install', command(Topics.installRequest));
    api.post('/rollback', command(ExtraTopics.rollbackRequest));

    api.get(
      '/events',
      wrap(async (req, res) => {
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        });
        const prefix = `${SUBJECT_ROOT}.evt.`;
        const subscription = deps.nc.subscribe(Subjects.allEvents, {
          callback: (_error, message) => {
            res.write(`event: ${message.subject.slice(prefix.length)}\ndata: ${message.string()}\n\n`);
          },
        });
        const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
        req.on('close', () => {
          clearInterval(keepAlive);
          subscription.unsubscribe();
        });
        // The opening comment goes out once the server has the subscription: every later event arrives.
        await deps.nc.flush();
        res.write(': aico-update events\n\n');
      }),
    );

    app.use('/api/v1', api);
  };
}

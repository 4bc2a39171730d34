import {
  AppError,
  type CheckResponse,
  type CommandReply,
  ExtraTopics,
  type NatsConnection,
  readDownloaded,
  readHistory,
  readLastCheck,
  StateKeys,
  SUBJECT_ROOT,
  Subjects,
  sendCommand,
  Topics,
} from '@aico-update/shared';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Redis } from 'ioredis';
import { controlGuard, type GuardOptions } from './control-guard.ts';

/*
 * The local control API for operators and frontends on the LAN (`/api/v1`): status, history, check,
 * install, rollback, and a server-sent-events stream of every update event. Install and rollback go
 * through the same commands as the bus: the installer decides what may be installed. Every request
 * passes control-guard.ts first (token, allowed hosts, JSON only, rate limit).
 */

export interface ControlApiDeps {
  redis: Redis;
  nc: NatsConnection;
  guard: GuardOptions;
  maxEventStreams: number;
  commandTimeoutMs: number;
  /** The newest progress events seen (download and install), for status. */
  progress: () => Record<string, unknown>;
  bus: () => { mode: string; connected: boolean; problem: string | undefined };
}

export function controlApi(deps: ControlApiDeps): (app: Express) => void {
  return (app) => {
    const api = express.Router();
    api.use(...controlGuard(deps.guard));
    api.use(express.json({ limit: '16kb' }));
    let streams = 0;
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
        const [installed, check, downloaded] = await Promise.all([
          deps.redis.hgetall(StateKeys.installed),
          readLastCheck(deps.redis),
          readDownloaded(deps.redis),
        ]);
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
        res.json({ history: await readHistory(deps.redis, limit) });
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
        if (streams >= deps.maxEventStreams) {
          res.status(503).json({
            error: {
              code: 'TOO_MANY_STREAMS',
              message: `${streams} event streams are open (control.max_event_streams); close one or try later`,
            },
          });
          return;
        }
        streams += 1;
        req.on('close', () => {
          streams -= 1;
        });
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

import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AppError,
  type CheckResponse,
  type CommandReply,
  DECISION_SERVICES,
  ExtraTopics,
  type NatsConnection,
  readDecisions,
  readDownloaded,
  readInstallerStatus,
  readLastCheck,
  readSettings,
  type SettingsReply,
  StateKeys,
  SUBJECT_ROOT,
  Subjects,
  sendCommand,
  type Topic,
  Topics,
} from '@aico-update/shared';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { controlGuard, type GuardOptions } from './control-guard.ts';
import type { DeviceRegistry } from './devices.ts';

/** `/history?component=backend&kind=quarantined,rolled_back&service=installer&since=…&limit=100`. */
const historyQuerySchema = z.object({
  component: z.string().max(50).optional(),
  kind: z.string().max(500).optional(),
  service: z.enum(DECISION_SERVICES).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
});

/*
 * The local control API for operators and frontends on the LAN (`/api/v1`): status, the history of
 * decisions, settings, check, download, install (now or at a time), cancel, dry run, skip, resume,
 * rollback, and a server-sent-events stream of every update event. Everything goes through the same
 * commands as the bus: the installer decides what may be installed, the downloader what is downloaded. Every request
 * passes control-guard.ts first (token, allowed hosts, JSON only, rate limit).
 */

export interface ControlApiDeps {
  redis: Redis;
  nc: NatsConnection;
  guard: GuardOptions;
  maxEventStreams: number;
  commandTimeoutMs: number;
  devices: DeviceRegistry;
  /** The downloader's verified cache: packages (blobs/) and the TUF metadata mirror (metadata/). */
  packagesDir: string;
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
            const status =
              error.code === 'BAD_REQUEST'
                ? 400
                : error.code === 'NOT_FOUND'
                  ? 404
                  : error.code === 'NO_RESPONDER'
                    ? 503
                    : 502;
            res.status(status).json({ error: { code: error.code, message: error.message } });
          } else next(error);
        });

    api.get(
      '/status',
      wrap(async (_req, res) => {
        const [installed, check, downloaded, installer, settings] = await Promise.all([
          deps.redis.hgetall(StateKeys.installed),
          readLastCheck(deps.redis),
          readDownloaded(deps.redis),
          readInstallerStatus(deps.redis),
          readSettings(deps.redis),
        ]);
        res.json({
          installed,
          available: Object.fromEntries(
            (check?.components ?? []).flatMap((c) => (c.update ? [[c.component, c.update.version]] : [])),
          ),
          last_check: check
            ? {
                checked_at: check.checked_at,
                outcome: check.outcome,
                error: check.error ?? null,
                ...(check.metadata_expiry ? { metadata_expiry: check.metadata_expiry } : {}),
              }
            : null,
          // Per component: installed, the release offered (notes, size, critical, channel), what is held.
          components: check?.components.map(({ devices: _devices, ...c }) => c) ?? [],
          downloaded: Object.keys(downloaded).sort(),
          // What each registered frontend device is offered, or waits for (the last check's view).
          frontends: check?.components.find((c) => c.component === 'frontend')?.devices ?? [],
          // Quarantined and skipped releases, paused components, installs waiting for their time.
          holds: installer?.holds ?? [],
          paused: installer?.paused ?? [],
          schedule: installer?.schedule ?? [],
          backups: installer?.backups ?? [],
          // The update system updating itself: the helper's phase and step, and how the last one ended.
          self_update: installer?.self_update ?? null,
          settings: settings
            ? { revision: settings.revision, effective: settings.effective, overrides: settings.overrides }
            : null,
          progress: deps.progress(),
          bus: deps.bus(),
        });
      }),
    );

    api.get(
      '/history',
      wrap(async (req, res) => {
        const query = historyQuerySchema.safeParse(req.query);
        if (!query.success) {
          throw new AppError(
            'BAD_REQUEST',
            `history filter: ${query.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
          );
        }
        const { component, kind, service, since, limit } = query.data;
        res.json({
          history: await readDecisions(deps.redis, {
            component,
            kinds: kind?.split(',').filter(Boolean),
            service,
            since: since ? new Date(since) : undefined,
            limit,
          }),
        });
      }),
    );

    api.get(
      '/devices',
      wrap(async (_req, res) => {
        res.json({ devices: await deps.devices.list() });
      }),
    );
    api.delete(
      '/devices/:id',
      wrap(async (req, res) => {
        const removed = await deps.devices.remove(String(req.params.id).slice(0, 200));
        res.status(removed ? 200 : 404).json({ removed });
      }),
    );

    // The home server as a TUF mirror for frontends: the verified metadata and the packages, by hash.
    api.get(
      '/packages/metadata/:file',
      wrap(async (req, res) => {
        const file = String(req.params.file);
        if (!/^(\d+\.)?[a-z][a-z0-9_-]*\.json$/.test(file))
          throw notFound(`no metadata file ${file.slice(0, 100)}`);
        await sendVerified(res, join(deps.packagesDir, 'metadata', file), { cache: 'no-cache' });
      }),
    );
    api.get(
      /^\/packages\/targets\/(?:[A-Za-z0-9._-]+\/)*([0-9a-f]{64})\.[^/]+$/,
      wrap(async (req, res) => {
        const sha256 = String((req.params as Record<string, string>)[0]);
        await sendVerified(res, join(deps.packagesDir, 'blobs', sha256), {
          etag: sha256,
          cache: 'public, max-age=31536000, immutable',
        });
      }),
    );

    api.get(
      '/schedule',
      wrap(async (_req, res) => {
        res.json({ schedule: (await readInstallerStatus(deps.redis))?.schedule ?? [] });
      }),
    );

    api.get(
      '/settings',
      wrap(async (_req, res) => {
        res.json(
          await sendCommand<SettingsReply>(
            deps.nc,
            ExtraTopics.settings,
            { source: 'control-api' },
            deps.commandTimeoutMs,
          ),
        );
      }),
    );
    api.put(
      '/settings',
      wrap(async (req, res) => {
        const body = (req.body ?? {}) as { set?: unknown; reset?: unknown };
        const reply = await sendCommand<SettingsReply>(
          deps.nc,
          ExtraTopics.settings,
          { set: body.set ?? {}, ...(body.reset ? { reset: body.reset } : {}), source: 'control-api' },
          deps.commandTimeoutMs,
        );
        res.status(reply.accepted ? 200 : 400).json(reply);
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

    const command = (topic: Topic, accepted = 202) =>
      wrap(async (req, res) => {
        const reply = await sendCommand<CommandReply>(
          deps.nc,
          topic,
          { ...(req.body ?? {}), source: 'control-api' },
          deps.commandTimeoutMs,
        );
        res.status(reply.accepted ? accepted : 409).json(reply);
      });
    api.post('/install', command(Topics.installRequest));
    api.post('/install/cancel', command(ExtraTopics.installCancel, 200));
    // The dry run: what an install would do; it changes nothing.
    api.post('/install/plan', command(ExtraTopics.installPlan, 200));
    api.post('/download', command(ExtraTopics.downloadRequest));
    api.post('/rollback', command(ExtraTopics.rollbackRequest));
    api.post('/skip', command(ExtraTopics.releaseSkip, 200));
    api.post('/resume', command(ExtraTopics.installResume, 200));

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

const notFound = (message: string) => new AppError('NOT_FOUND', message);

/**
 * Sends a file of the verified cache: only a regular file (no link followed), with Range (resumable),
 * Content-Length and, for a package, ETag = its sha256. A Range beyond the file is answered 416.
 */
async function sendVerified(
  res: Response,
  file: string,
  options: { etag?: string; cache: string },
): Promise<void> {
  const info = await lstat(file).catch(() => undefined);
  if (!info?.isFile())
    throw notFound("not in the home server's verified cache (not downloaded for any registered device yet?)");
  await new Promise<void>((resolve, reject) => {
    res.sendFile(
      file,
      {
        etag: false,
        lastModified: false,
        dotfiles: 'deny',
        headers: {
          'cache-control': options.cache,
          ...(options.etag ? { etag: `"${options.etag}"` } : {}),
          'content-type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream',
        },
      },
      (error?: Error & { status?: number }) => {
        if (!error || res.headersSent) return resolve();
        if (error.status === 416) {
          res
            .status(416)
            .set('content-range', `bytes */${info.size}`)
            .json({
              error: {
                code: 'RANGE_NOT_SATISFIABLE',
                message: `the range asked for is beyond the file (${info.size} bytes); ask from 0 to ${info.size - 1}`,
              },
            });
          return resolve();
        }
        reject(error);
      },
    );
  });
}

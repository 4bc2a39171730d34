import type { Server } from 'node:http';
import express, { type ErrorRequestHandler, type Express } from 'express';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { AppError } from './errors.ts';

/** A named dependency check for /readyz: resolves when the dependency answers, throws when it does not. */
export type ReadinessCheck = { name: string; check: () => Promise<void> };

export interface ServiceHttpOptions {
  registry: Registry;
  readiness: ReadinessCheck[];
  logger: Logger;
  /** Adds the service's own routes before the error handler. */
  routes?: (app: Express) => void;
}

/** Every service's HTTP face: /healthz (process alive), /readyz (dependencies answer), /metrics. */
export function createServiceApp(options: ServiceHttpOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Open to anyone who reaches the port (Docker's health check, Prometheus): names and verdicts only.
  // Why a dependency is not ready (hosts, ports, keys) goes to the log, once per distinct reason.
  let lastProblems = '';
  app.get('/readyz', async (_req, res) => {
    const results = await Promise.all(
      options.readiness.map(async ({ name, check }) => {
        try {
          await withTimeout(check(), 2000);
          return { name, ok: true as const, problem: undefined };
        } catch (error) {
          return { name, ok: false as const, problem: (error as Error).message };
        }
      }),
    );
    const problems = results
      .filter((r) => !r.ok)
      .map((r) => `${r.name}: ${r.problem}`)
      .join('; ');
    if (problems && problems !== lastProblems) options.logger.warn({ problems }, `not ready: ${problems}`);
    lastProblems = problems;
    const ready = results.every((r) => r.ok);
    res.status(ready ? 200 : 503).json({
      status: ready ? 'ready' : 'not ready',
      checks: results.map(({ name, ok }) => ({ name, ok })),
    });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(options.registry.contentType).send(await options.registry.metrics());
  });
  options.routes?.(app);
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    const status = error instanceof AppError ? 400 : 500;
    if (status === 500) options.logger.error({ err: error }, 'request failed');
    res.status(status).json({ error: { code: error.code ?? 'INTERNAL', message: error.message } });
  };
  app.use(onError);
  return app;
}

/** Listens and resolves once bound; the returned close() stops intake and waits for open requests. */
export async function listen(
  app: Express,
  host: string,
  port: number,
): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, (error?: Error) => (error ? reject(error) : resolve(s)));
  });
  const address = server.address();
  const boundPort = typeof address === 'object' && address ? address.port : port;
  return {
    server,
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

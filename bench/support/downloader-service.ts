/*
 * The downloader service as deployed, for benchmarks that measure it: its own process, compiled, with
 * the Node flags its docker-compose.yml command gives it, ready once /readyz answers.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { downloaderEnv } from '@aico-update/downloader/testing';
import type { TestRepository } from '@aico-update/release/testing';
import { freePort, type SpawnedServer, waitUntil } from '@aico-update/shared/testing';
import type { CompiledWorkspace } from './compiled.ts';
import { composeNodeFlags } from './compiled.ts';

export interface DownloaderService {
  /** VmRSS (now) or VmHWM (the peak since start) of the service's process, in MiB. */
  memoryMiB(field: 'VmRSS' | 'VmHWM'): Promise<number>;
  /** SIGTERM, and wait until the process has exited. */
  stop(): Promise<void>;
}

export async function startDownloaderService(
  compiled: CompiledWorkspace,
  t: TestRepository,
  servers: { redis: SpawnedServer; nats: SpawnedServer },
  env: Record<string, string>,
): Promise<DownloaderService> {
  const httpPort = await freePort();
  const service = spawn(
    process.execPath,
    [...(await composeNodeFlags('downloader')), join(compiled.dir, 'services/downloader/src/main.js')],
    {
      stdio: 'ignore',
      env: {
        PATH: process.env.PATH ?? '',
        ...downloaderEnv(t, servers.redis, servers.nats, {
          AICO_HTTP_PORT: String(httpPort),
          AICO_UPDATE_AUTO_INSTALL: 'false',
          AICO_LOG_LEVEL: 'error',
          ...env,
        }),
      },
    },
  );
  const exited = new Promise<void>((resolve) => service.once('exit', () => resolve()));
  await waitUntil(
    async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.ok,
    'the downloader service to be ready',
    30_000,
    100,
  );
  return {
    async memoryMiB(field) {
      const status = await readFile(`/proc/${service.pid}/status`, 'utf8');
      return Number(status.match(new RegExp(`${field}:\\s+(\\d+)`))?.[1]) / 1024;
    },
    async stop() {
      service.kill('SIGTERM');
      await exited;
    },
  };
}

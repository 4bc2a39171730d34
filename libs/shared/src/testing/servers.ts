import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/*
 * Real servers for tests: redis-server and nats-server spawned on free ports, stopped by PID.
 * They come from Debian's packages (`apt-get install -y redis-server nats-server`); a missing binary is
 * reported with that command instead of a spawn ENOENT.
 */

export interface SpawnedServer {
  url: string;
  port: number;
  /** Stops the process (SIGTERM, then SIGKILL after 5 s) and removes its data. */
  stop(): Promise<void>;
  /** Kills the process hard and starts it again on the same port with the same data (restart tests). */
  restart(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export async function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `aico-${prefix}-`));
}

/** A Redis on a free port; `persistent` turns AOF on, as in the deployment, for restart tests. */
export async function spawnRedis(
  options: { persistent?: boolean; aclFile?: string } = {},
): Promise<SpawnedServer> {
  const port = await freePort();
  const dir = await makeTempDir('redis');
  const aof = options.persistent
    ? ['--appendonly', 'yes', '--appendfsync', 'always']
    : ['--appendonly', 'no'];
  const acl = options.aclFile ? ['--aclfile', options.aclFile] : [];
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...aof, '--dir', dir, ...acl];
  return startManaged('redis-server', 'redis-server', args, port, `redis://127.0.0.1:${port}`, dir);
}

/** A NATS server with JetStream on a free port; `configFile` adds users and permissions (access.ts). */
export async function spawnNats(options: { configFile?: string } = {}): Promise<SpawnedServer> {
  const port = await freePort();
  const dir = await makeTempDir('nats');
  // A configuration file brings its own JetStream store folder.
  const storage = options.configFile ? ['-c', options.configFile] : ['-js', '-sd', dir];
  const args = [...storage, '-a', '127.0.0.1', '-p', String(port)];
  return startManaged('nats-server', 'nats-server', args, port, `nats://127.0.0.1:${port}`, dir);
}

async function startManaged(
  binary: string,
  debianPackage: string,
  args: string[],
  port: number,
  url: string,
  dataDir: string,
): Promise<SpawnedServer> {
  let child = await startProcess(binary, debianPackage, args, port);
  return {
    url,
    port,
    async stop() {
      await stopProcess(child);
      await rm(dataDir, { recursive: true, force: true });
    },
    async restart() {
      child.kill('SIGKILL');
      await exited(child);
      child = await startProcess(binary, debianPackage, args, port);
    },
  };
}

async function startProcess(
  binary: string,
  debianPackage: string,
  args: string[],
  port: number,
): Promise<ChildProcess> {
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2000);
  });
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'ENOENT'
          ? new Error(
              `${binary} is not installed: run apt-get install -y ${debianPackage} (or bash scripts/setup.sh)`,
            )
          : error,
      ),
    );
    child.once('exit', (code) =>
      reject(new Error(`${binary} exited with ${code} before it listened: ${stderr}`)),
    );
  });
  await Promise.race([waitForPort(port, 10_000), failed]);
  child.removeAllListeners('exit');
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited(child);
  clearTimeout(timer);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
      socket.connect(port, '127.0.0.1');
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listened on port ${port} within ${timeoutMs} ms`);
}

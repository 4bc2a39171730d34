import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ClientUnderTest, clientFor, folderState, refresh, rejection } from '../support/client.ts';

let t: TestRepository;
let c: ClientUnderTest;

beforeEach(async () => {
  t = await startTestRepository();
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  c = clientFor(t);
});

afterEach(async () => {
  await c.fetcher.close();
  await t.close();
});

/** A minimal HTTP CONNECT proxy on loopback that counts the tunnels it opened. */
async function startConnectProxy(): Promise<{ url: string; tunnels: string[]; server: Server }> {
  const tunnels: string[] = [];
  const server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req, client, head) => {
    tunnels.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = netConnect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, tunnels, server };
}

describe('TUF client against a failing server', () => {
  it('server down: classified unreachable, trusted state kept, works once the server is back', async () => {
    await refresh(c);
    const before = await folderState(c.metadataDir);
    const down = clientFor(
      { ...t, metadataUrl: 'https://127.0.0.1:1/metadata', targetsUrl: 'https://127.0.0.1:1/targets' },
      'client',
    );
    const error = await rejection(refresh(down));
    expect(error).toMatchObject({ kind: 'unreachable', code: 'TUF_UNREACHABLE' });
    expect(error.message).toMatch(/cannot reach the update server.*check the network/);
    expect(await folderState(c.metadataDir)).toEqual(before);
    await expect(refresh(c)).resolves.toBeDefined();
  });

  it('a 500 that passes is retried; one that persists is reported as a server error', async () => {
    t.faults.add('/metadata/timestamp.json', { kind: 'status', status: 500 }, 1);
    await expect(refresh(c)).resolves.toBeDefined();
    expect(c.fetcher.stats.retries).toBe(1);

    t.faults.add('/metadata/timestamp.json', { kind: 'status', status: 503 });
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ kind: 'unreachable', code: 'TUF_SERVER_ERROR' });
    expect(error.message).toContain('HTTP 503');
    t.faults.clear();
    await expect(refresh(c)).resolves.toBeDefined();
  });

  it('a connection cut in the middle of metadata is retried', async () => {
    t.faults.add('/metadata/timestamp.json', { kind: 'cut', afterBytes: 20 }, 1);
    await expect(refresh(c)).resolves.toBeDefined();
    expect(c.fetcher.stats.retries).toBe(1);
  });

  it('an untrusted certificate is refused with advice; the CA file makes it trusted', async () => {
    const noCa = clientFor(t, 'no-ca', { caFile: undefined });
    const error = await rejection(refresh(noCa));
    expect(error).toMatchObject({ kind: 'unreachable', code: 'TUF_TLS_UNTRUSTED' });
    expect(error.message).toContain('update_server.ca_file');
    await noCa.fetcher.close();

    const missingCa = clientFor(t, 'missing-ca', { caFile: join(t.workDir, 'nope.pem') });
    await expect(rejection(refresh(missingCa))).resolves.toMatchObject({
      kind: 'config',
      code: 'TUF_CA_FILE_UNREADABLE',
    });
    await expect(refresh(c)).resolves.toBeDefined();
  });

  it('corrupt local metadata: a garbled timestamp is fetched again', async () => {
    await refresh(c);
    await writeFile(join(c.metadataDir, 'timestamp.json'), Buffer.alloc(100, 0));
    await expect(refresh(c)).resolves.toMatchObject({ root: 1 });
  });

  it('goes through an explicit proxy, and through HTTPS_PROXY from the environment', async () => {
    const proxy = await startConnectProxy();
    try {
      const viaOption = clientFor(t, 'via-option', { proxy: proxy.url });
      await refresh(viaOption);
      await viaOption.fetcher.close();
      expect(proxy.tunnels.length).toBeGreaterThan(0);

      const seen = proxy.tunnels.length;
      process.env.HTTPS_PROXY = proxy.url;
      try {
        const viaEnv = clientFor(t, 'via-env');
        await refresh(viaEnv);
        await viaEnv.fetcher.close();
      } finally {
        delete process.env.HTTPS_PROXY;
      }
      expect(proxy.tunnels.length).toBeGreaterThan(seen);
      expect(proxy.tunnels.every((target) => target === `127.0.0.1:${t.server.port}`)).toBe(true);
    } finally {
      proxy.server.close();
    }
  });

  it('two sessions on one metadata folder take turns and both see a consistent state', async () => {
    const other = clientFor(t, 'client');
    const results = await Promise.all([refresh(c), refresh(other), refresh(c)]);
    expect(new Set(results.map((r) => JSON.stringify(r))).size).toBe(1);
    await other.fetcher.close();
  });
});

import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ComponentType,
  create,
  type DescMessage,
  DownloadProgressSchema,
  DownloadUpdateRequestSchema,
  type Envelope,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  type MessageInitShape,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotificationSchema,
  UpdateStateSyncSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { ExtraTopics, StateKeys, Topics } from '@aico-update/shared';
import { makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { Redis } from 'ioredis';
import { BaseFetcher, Updater } from 'tuf-js';
import { DownloadHTTPError } from 'tuf-js/dist/error.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BusStack, startBusStack } from '../support/stack.ts';

/*
 * Frontends on other devices, through the bus, against the whole system (support/stack.ts): a Windows
 * and a macOS frontend speak AICO's wire format over ZeroMQ. Backend 2.0.0 serves only frontend API 2;
 * frontend 2.0.0 speaks it and needs backend ≥ 2.0.0. The backend goes first; each device is offered its
 * package only after the backend's commit, fetches it from the home server (cut half-way, resumed) and
 * verifies it with stock tuf-js against the mirrored metadata; the devices report 2.0.0. A broken
 * backend is rolled back and the frontend that needs it stays held.
 */

let stack: BusStack;
let frontend: BusStack['frontend'];
let redis: Redis;
const packages: Record<string, string> = {};

beforeAll(async () => {
  stack = await startBusStack({ installerEnv: { AICO_INSTALLER_TIMEZONE: 'UTC' } });
  ({ frontend } = stack);
  redis = new Redis(stack.redis.url, { maxRetriesPerRequest: null });
  const dir = await makeTempDir('frontend-packages');
  for (const version of ['1.0.0', '2.0.0', '2.1.0']) {
    for (const platform of ['windows', 'macos']) {
      const file = join(dir, `aico-${version}-${platform}.${platform === 'windows' ? 'msix' : 'dmg'}`);
      await writeFile(file, randomBytes(256 * 1024 + 17));
      packages[`${version}-${platform}`] = file;
    }
  }
}, 180_000);

afterAll(async () => {
  redis?.disconnect();
  await stack?.stop();
});

const publishFrontend = (version: string, api: string, needsBackend: string) =>
  stack.repo.repo.addRelease({
    component: 'frontend',
    version,
    channel: 'stable',
    notes: `frontend ${version}`,
    artifacts: [],
    packages: ['windows', 'macos'].map((platform) => ({
      platform,
      file: packages[`${version}-${platform}`] as string,
    })),
    frontendApi: api,
    needsBackend,
  });

const msg = <Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>) => ({
  schema,
  message: create(schema, init),
});

/** A frontend device asking for itself (AICO's UpdateCheckRequest with device_id and system_info). */
const deviceCheck = (id: string, platform: string, version: string, forced = false) =>
  frontend.ask(
    Topics.checkRequest,
    msg(UpdateCheckRequestSchema, {
      componentType: ComponentType.COMPONENT_FRONTEND,
      deviceId: id,
      currentVersion: { version },
      systemInfo: { platform },
    }),
    UpdateCheckResponseSchema,
    forced ? { forced: 'true' } : {},
  );
const backendCheck = () =>
  frontend.ask(Topics.checkRequest, msg(UpdateCheckRequestSchema, {}), UpdateCheckResponseSchema, {
    forced: 'true',
  });

async function api(path: string, init: RequestInit = {}) {
  return fetch(`${stack.api}${path}`, { ...init, headers: { ...stack.headers, ...(init.headers ?? {}) } });
}

/** tuf-js, stock, fetching from the home server with the control API's token. */
class HomeServerFetcher extends BaseFetcher {
  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const response = await fetch(url, { headers: { authorization: stack.headers.authorization as string } });
    if (!response.ok || !response.body)
      throw new DownloadHTTPError(`${url}: HTTP ${response.status}`, response.status);
    return response.body as ReadableStream<Uint8Array<ArrayBuffer>>;
  }
}

/** Waits (with forced checks: within 10 s the last one is reused) until the answer fits. */
async function untilAnswer(
  check: () => ReturnType<typeof deviceCheck>,
  fits: (a: Awaited<ReturnType<typeof deviceCheck>>) => boolean,
  what: string,
) {
  return waitUntil(
    async () => {
      const answer = await check();
      return fits(answer) ? answer : undefined;
    },
    what,
    60_000,
    1000,
  );
}

describe('frontends on other devices', () => {
  it('registers each device that asks; a bad platform, a garbage or huge id is refused and nothing is stored', async () => {
    await publishFrontend('1.0.0', '1', '>=1.0.0');
    const pc = await deviceCheck('pc-1', 'windows', '1.0.0', true);
    expect(pc.envelope.attributes.error_code).toBeUndefined();
    expect(pc.payload).toMatchObject({ updateAvailable: false });
    expect(pc.envelope.attributes.device_answer).toBe('up_to_date');
    await deviceCheck('mac-1', 'macos', '1.0.0');

    const toaster = await deviceCheck('toaster-1', 'toaster', '1.0.0');
    expect(toaster.envelope.attributes.error_code).toBe('BAD_DEVICE');
    expect(toaster.envelope.attributes.error_message).toMatch(
      /platform "toaster": a platform: one of windows, macos, linux, android, ios/,
    );
    const garbage = await deviceCheck('../../etc/passwd', 'windows', '1.0.0');
    expect(garbage.envelope.attributes.error_message).toMatch(
      /device_id "\.\.\/\.\.\/etc\/passwd": a device id/,
    );
    const huge = await deviceCheck('x'.repeat(5000), 'windows', '1.0.0');
    expect(huge.envelope.attributes.error_code).toBe('BAD_DEVICE');
    const badVersion = await deviceCheck('pc-2', 'windows', 'latest');
    expect(badVersion.envelope.attributes.error_code).toBe('BAD_DEVICE');

    const devices = (await (await api('/devices')).json()) as { devices: { id: string; version: string }[] };
    expect(devices.devices.map((d) => `${d.id} ${d.version}`)).toEqual(['mac-1 1.0.0', 'pc-1 1.0.0']);
    const metrics = await (await fetch(`${stack.api.replace('/api/v1', '')}/metrics`)).text();
    expect(metrics).toMatch(/aico_update_devices\{[^}]*platform="windows"[^}]*version="1\.0\.0"[^}]*\} 1/);
  });

  it('a backend that would strand the devices is held until a frontend for every platform fits it', async () => {
    await stack.publishBackend('2.0.0', { frontendApis: ['2'] });
    const held = await untilAnswer(
      backendCheck,
      (a) => a.payload.updateMessage.includes('2.0.0 is held back'),
      'a check that sees backend 2.0.0',
    );
    expect(held.payload.updateAvailable).toBe(false);
    expect(held.payload.updateMessage).toMatch(
      /2\.0\.0 is held back: backend 2\.0\.0 would stop serving 2 registered device/,
    );

    await publishFrontend('2.0.0', '2', '>=2.0.0');
    const offered = await untilAnswer(
      backendCheck,
      (a) => a.payload.updateAvailable,
      'backend 2.0.0 offered',
    );
    expect(offered.payload.updateInfo?.updateId).toBe('backend-2.0.0');
    // The frontend needs the newer backend: each device is told what it waits for.
    const waits = await deviceCheck('pc-1', 'windows', '1.0.0');
    expect(waits.payload.updateAvailable).toBe(false);
    expect(waits.envelope.attributes).toMatchObject({
      device_answer: 'waits_for_backend',
      waits_for_backend: '>=2.0.0',
    });
    expect(waits.payload.updateMessage).toMatch(
      /frontend 2\.0\.0 waits for backend >=2\.0\.0: backend 1\.0\.0 is installed/,
    );
    // Both holds are in the history, once each, and the status shows what each device waits for.
    const history = (await (await api('/history?kind=waits_for_backend,strands_devices')).json()) as {
      history: { kind: string; version: string; reason: string }[];
    };
    expect(history.history.map((d) => `${d.kind} ${d.version}`).sort()).toEqual([
      'strands_devices 2.0.0',
      'waits_for_backend 2.0.0',
    ]);
    expect(history.history.find((d) => d.kind === 'strands_devices')?.reason).toMatch(/2 registered device/);
    const status = (await (await api('/status')).json()) as {
      frontends: { device_id: string; answer: string }[];
    };
    expect(status.frontends.map((f) => `${f.device_id} ${f.answer}`).sort()).toEqual([
      'mac-1 waits_for_backend',
      'pc-1 waits_for_backend',
    ]);
  });

  it('the backend goes first: frontends hear when and for how long, then that it is back; then each device gets its own package from the home server, resumed, verified with stock tuf-js', async () => {
    await waitUntil(
      () => redis.hget(StateKeys.downloaded, 'backend@2.0.0'),
      'backend 2.0.0 downloaded',
      60_000,
    );
    const from = frontend.received.length;
    const accepted = await frontend.ask(
      Topics.installRequest,
      msg(InstallUpdateRequestSchema, { updateId: 'backend-2.0.0', autoRestart: true }),
      InstallUpdateResponseSchema,
    );
    expect(accepted.payload, accepted.payload.message).toMatchObject({ success: true });
    const done = await waitUntil(
      () =>
        frontend.received
          .slice(from)
          .filter((m) => m.topic === Topics.installComplete)
          .map((m) => unpackPayload(m.envelope as Envelope, InstallUpdateResponseSchema))[0],
      'the backend install',
      90_000,
    );
    expect(done.message).toMatch(/backend 2\.0\.0: installed.*backend is back and runs 2\.0\.0/);
    const notices = frontend.received
      .slice(from)
      .filter((m) => m.topic === Topics.restartScheduled)
      .map((m) => unpackPayload(m.envelope as Envelope, UpdateNotificationSchema).message);
    expect(notices[0]).toMatch(
      /backend 2\.0\.0 will be installed and restarted at .*; expect about \d+ s of downtime/,
    );

    for (const [id, platform] of [
      ['pc-1', 'windows'],
      ['mac-1', 'macos'],
    ] as const) {
      // The device asks the home server to fetch its package (for the platforms devices use).
      const download = await frontend.ask(
        ExtraTopics.downloadRequest,
        msg(DownloadUpdateRequestSchema, { updateId: 'frontend-2.0.0' }),
        DownloadProgressSchema,
      );
      expect(download.envelope.attributes.error_code, download.payload.message).toBeUndefined();
      await waitUntil(
        () => redis.hget(StateKeys.downloaded, 'frontend@2.0.0'),
        'frontend 2.0.0 downloaded',
        60_000,
      );
      const answer = await untilAnswer(
        () => deviceCheck(id, platform, '1.0.0'),
        (a) => a.payload.updateAvailable,
        `frontend 2.0.0 offered to ${id}`,
      );
      expect(answer.payload.updateInfo).toMatchObject({
        updateId: 'frontend-2.0.0',
        componentType: ComponentType.COMPONENT_FRONTEND,
      });
      const {
        package_url: url,
        package_target: target,
        package_sha256: sha256,
      } = answer.envelope.attributes as {
        package_url: string;
        package_target: string;
        package_sha256: string;
      };
      expect(target).toMatch(new RegExp(`aico-2\\.0\\.0-${platform}\\.`));

      // Cut half-way, then resumed with Range: the bytes are the signed package.
      const local = join(await makeTempDir(`device-${id}`), 'package');
      const expected = await readFile(packages[`2.0.0-${platform}`] as string);
      const half = Math.floor(expected.length / 2);
      const first = await api(url.replace('/api/v1', ''), { headers: { range: `bytes=0-${half - 1}` } });
      expect(first.status).toBe(206);
      expect(first.headers.get('etag')).toBe(`"${sha256}"`);
      const rest = await api(url.replace('/api/v1', ''), { headers: { range: `bytes=${half}-` } });
      expect(rest.status).toBe(206);
      expect(Number(rest.headers.get('content-length'))).toBe(expected.length - half);
      await writeFile(
        local,
        Buffer.concat([Buffer.from(await first.arrayBuffer()), Buffer.from(await rest.arrayBuffer())]),
      );
      const beyond = await api(url.replace('/api/v1', ''), {
        headers: { range: `bytes=${expected.length + 10}-` },
      });
      expect(beyond.status).toBe(416);

      // Stock tuf-js, the publisher's root, the home server as the mirror: the package verifies.
      const tufDir = await makeTempDir(`device-tuf-${id}`);
      await mkdir(join(tufDir, 'metadata'));
      await copyFile(stack.repo.repo.trustedRootPath, join(tufDir, 'metadata', 'root.json'));
      const updater = new Updater({
        metadataDir: join(tufDir, 'metadata'),
        metadataBaseUrl: `${stack.api}/packages/metadata`,
        targetBaseUrl: `${stack.api}/packages/targets`,
        targetDir: tufDir,
        fetcher: new HomeServerFetcher(),
      });
      await updater.refresh();
      const info = await updater.getTargetInfo(target);
      expect(info).toBeDefined();
      expect(await updater.findCachedTarget(info as NonNullable<typeof info>, local)).toBe(local);
      await writeFile(local, Buffer.concat([Buffer.from('x'), expected.subarray(1)]));
      expect(await updater.findCachedTarget(info as NonNullable<typeof info>, local)).toBeUndefined();

      // The device runs it and says so: its version advances.
      await frontend.ask(
        ExtraTopics.stateSync,
        msg(UpdateStateSyncSchema, {
          deviceId: id,
          componentType: ComponentType.COMPONENT_FRONTEND,
          currentVersion: { version: '2.0.0', attributes: { platform } },
        }),
        UpdateStateSyncSchema,
      );
    }
    const devices = (await (await api('/devices')).json()) as { devices: { id: string; version: string }[] };
    expect(devices.devices.map((d) => `${d.id} ${d.version}`)).toEqual(['mac-1 2.0.0', 'pc-1 2.0.0']);
    // Without the token, nothing is served.
    expect((await fetch(`${stack.api}/packages/metadata/timestamp.json`)).status).toBe(401);
  });

  it('a broken backend is rolled back and the frontend that needs it stays held; one that fits is offered at once', async () => {
    await publishFrontend('2.1.0', '2', '>=2.1.0');
    await stack.publishBackend('2.1.0', { frontendApis: ['2'], behaviour: 'unhealthy' });
    await untilAnswer(
      backendCheck,
      (a) => a.payload.updateInfo?.updateId === 'backend-2.1.0',
      'backend 2.1.0 offered',
    );
    await waitUntil(
      () => redis.hget(StateKeys.downloaded, 'backend@2.1.0'),
      'backend 2.1.0 downloaded',
      60_000,
    );
    const from = frontend.received.length;
    await frontend.ask(
      Topics.installRequest,
      msg(InstallUpdateRequestSchema, { updateId: 'backend-2.1.0', autoRestart: true }),
      InstallUpdateResponseSchema,
    );
    const failed = await waitUntil(
      () =>
        frontend.received
          .slice(from)
          .filter((m) => m.topic === Topics.installComplete)
          .map((m) => unpackPayload(m.envelope as Envelope, InstallUpdateResponseSchema))[0],
      'the broken install',
      90_000,
    );
    expect(failed.message).toMatch(/rolled_back.*backend is back and runs 2\.0\.0/);
    const waits = await deviceCheck('pc-1', 'windows', '2.0.0', true);
    expect(waits.envelope.attributes).toMatchObject({
      device_answer: 'waits_for_backend',
      waits_for_backend: '>=2.1.0',
    });
    expect(waits.payload.updateMessage).toMatch(/backend 2\.0\.0 is installed/);

    // A frontend-only release that fits the backend running now: offered at once.
    await stack.repo.repo.addRelease({
      component: 'frontend',
      version: '2.0.1',
      channel: 'stable',
      notes: '',
      artifacts: [],
      packages: [{ platform: 'windows', file: packages['2.0.0-windows'] as string }],
      frontendApi: '2',
      needsBackend: '>=2.0.0',
      force: true,
    });
    const fits = await untilAnswer(
      () => deviceCheck('pc-1', 'windows', '2.0.0', true),
      (a) => a.payload.updateInfo?.updateId === 'frontend-2.0.1',
      'frontend 2.0.1 offered',
    );
    expect(fits.envelope.attributes.device_answer).toBe('update');
  });
});

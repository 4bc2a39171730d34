import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UPDATER_SERVICES } from '@aico-update/shared';
import { buildSampleBackend, docker, makeTempDir, testTag, waitUntil } from '@aico-update/shared/testing';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerRuntime, PREVIOUS_SUFFIX } from '../../src/adapters/docker-runtime.ts';
import { IntentStore, type SelfUpdateIntent } from '../../src/self-update/intent.ts';
import { runSelfUpdate } from '../../src/self-update/swap.ts';

/*
 * The helper's swap of the update system's four services on the real Docker Engine, with stand-in
 * containers (the sample image: a health check every second) under the names and tags a deployment
 * gives them: the order, the health gate of each, the rollback of all on any failure, and the helper
 * process SIGKILLed at each step and started again (as the engine's restart policy does): every time
 * the services end on one version, running and healthy, with no container left under another name.
 */

const helperMain = resolve(import.meta.dirname, '../../src/self-update/helper.ts');
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const runtime = new DockerRuntime();
const run = testTag('aico-test/self-update', 'x').split(':')[1] as string;
let oldId: string;
let newId: string;
let brokenId: string;
const images: string[] = [];

beforeAll(async () => {
  const tag = (v: string) => testTag('aico-test/self-update', v);
  images.push(tag('1.0.0'), tag('1.1.0'), tag('broken'));
  [oldId, newId, brokenId] = await Promise.all([
    buildSampleBackend(tag('1.0.0'), '1.0.0'),
    buildSampleBackend(tag('1.1.0'), '1.1.0'),
    buildSampleBackend(tag('broken'), '1.1.0', 'exits'),
  ]);
}, 120_000);

afterAll(async () => {
  await docker('rmi', '-f', ...images).catch(() => undefined);
});

/** Four containers as compose names them, each created from its deployment's tag, healthy. */
class StandIns {
  readonly id = randomBytes(3).toString('hex');
  readonly containers = Object.fromEntries(
    UPDATER_SERVICES.map((s) => [s, `aico-su-${this.id}-${s}-1`]),
  ) as Record<(typeof UPDATER_SERVICES)[number], string>;
  readonly refs = Object.fromEntries(
    UPDATER_SERVICES.map((s) => [s, `aico-test/su-${s}:${this.id}-${run}`]),
  ) as Record<(typeof UPDATER_SERVICES)[number], string>;
  stateDir = '';

  async start(): Promise<this> {
    this.stateDir = await makeTempDir('self-update');
    for (const service of UPDATER_SERVICES) {
      await docker('tag', oldId, this.refs[service]);
      await docker(
        'run',
        '-d',
        '--init',
        '--restart',
        'unless-stopped',
        '--name',
        this.containers[service],
        this.refs[service],
      );
    }
    for (const service of UPDATER_SERVICES) {
      const verdict = await runtime.waitHealthy(this.containers[service], { timeoutMs: 20_000, soakMs: 0 });
      expect(verdict.healthy, verdict.reason).toBe(true);
    }
    return this;
  }

  /** The intent an installer writes: every service to `newImages[service]` (default the good new image). */
  async intent(newImages: Partial<Record<string, string>> = {}): Promise<IntentStore> {
    const store = new IntentStore(this.stateDir, logger);
    const intent: SelfUpdateIntent = {
      v: 1,
      id: `updater-1.1.0-${this.id}`,
      release: {
        component: 'updater',
        version: '1.1.0',
        channel: 'stable',
        critical: false,
        notes: '',
        released_at: new Date().toISOString(),
        size_bytes: 0,
        target: { path: 'releases/updater/1.1.0.json', length: 1, sha256: 'a'.repeat(64) },
      } as SelfUpdateIntent['release'],
      reason: 'request',
      from_version: '1.0.0',
      helper: `${this.containers.installer}-self-update`,
      services: UPDATER_SERVICES.map((service) => ({
        service,
        container: this.containers[service],
        old_image_id: oldId,
        new_image_id: newImages[service] ?? newId,
        ref: this.refs[service],
      })),
      health_timeout_ms: 15_000,
      soak_ms: 500,
      started_at: new Date().toISOString(),
      phase: 'started',
      swapped: [],
      steps: [],
      helper_starts: 1,
    };
    await store.write(intent);
    return store;
  }

  /** Every service on one image, running and healthy, its tag on that image, nothing left aside. */
  async expectAllOn(imageId: string): Promise<void> {
    for (const service of UPDATER_SERVICES) {
      const name = this.containers[service];
      await waitUntil(
        async () => (await runtime.container(name))?.health === 'healthy',
        `${name} to be healthy`,
        20_000,
      );
      expect((await runtime.container(name))?.imageId, service).toBe(imageId);
      expect(await docker('image', 'inspect', '--format', '{{.Id}}', this.refs[service]), service).toBe(
        imageId,
      );
      expect(await runtime.container(`${name}${PREVIOUS_SUFFIX}`), service).toBeUndefined();
    }
    const left = await docker('ps', '-a', '--filter', `name=aico-su-${this.id}`, '--format', '{{.Names}}');
    expect(left.split('\n').sort()).toEqual(Object.values(this.containers).sort());
  }

  async remove(): Promise<void> {
    const names = Object.values(this.containers).flatMap((n) => [n, `${n}${PREVIOUS_SUFFIX}`]);
    await docker('rm', '-f', ...names).catch(() => undefined);
    await docker('rmi', ...Object.values(this.refs)).catch(() => undefined);
  }
}

async function readIntent(stateDir: string): Promise<SelfUpdateIntent | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'self-update.json'), 'utf8')) as SelfUpdateIntent;
  } catch {
    return undefined;
  }
}

function startHelper(stateDir: string): ChildProcess {
  return spawn(process.execPath, [helperMain, join(stateDir, 'self-update.json')], {
    stdio: 'ignore',
    env: { PATH: process.env.PATH ?? '', AICO_LOG_LEVEL: 'warn' },
  });
}

describe('the self-update helper', () => {
  it('swaps the services one at a time, the installer last, each healthy through its soak; then removes the old containers', {
    timeout: 120_000,
  }, async () => {
    const stand = await new StandIns().start();
    try {
      const store = await stand.intent();
      const done = await runSelfUpdate(runtime, store, (await store.read()) as SelfUpdateIntent, logger);
      expect(done.outcome).toMatchObject({ result: 'committed' });
      const swaps = done.steps
        .filter((s) => s.step === 'swap' && s.status === 'started')
        .map((s) => s.service);
      expect(swaps).toEqual(['checker', 'downloader', 'bus-gateway', 'installer']);
      // Each gated before the next began.
      const order = done.steps.map((s) => `${s.step}:${s.service}:${s.status}`);
      expect(order.indexOf('health-gate:checker:done')).toBeLessThan(
        order.indexOf('swap:downloader:started'),
      );
      expect((await store.read())?.outcome?.result).toBe('committed');
      await stand.expectAllOn(newId);
    } finally {
      await stand.remove();
    }
  });

  it('puts every service back on its old image when the last one (the installer) fails its health gate', {
    timeout: 120_000,
  }, async () => {
    const stand = await new StandIns().start();
    try {
      const store = await stand.intent({ installer: brokenId });
      const done = await runSelfUpdate(runtime, store, (await store.read()) as SelfUpdateIntent, logger);
      expect(done.outcome?.result).toBe('rolled_back');
      expect(done.outcome?.reason).toMatch(/new installer did not pass its health gate.*put back on 1\.0\.0/);
      const rolled = done.steps
        .filter((s) => s.step === 'roll-back' && s.status === 'done')
        .map((s) => s.service);
      expect(rolled).toEqual(['installer', 'bus-gateway', 'downloader', 'checker']);
      await stand.expectAllOn(oldId);
    } finally {
      await stand.remove();
    }
  });

  // Where the helper is SIGKILLed: the first step of that kind and service it writes (the swap of a
  // service begins, a health gate waits, a rollback is under way), or right after the commit.
  const KILL_POINTS: { at: string; broken?: boolean; ends: 'old' | 'new' }[] = [
    { at: 'swap:checker:started', ends: 'old' },
    { at: 'health-gate:downloader:started', ends: 'old' },
    { at: 'swap:installer:started', ends: 'old' },
    { at: 'health-gate:installer:started', ends: 'old' },
    { at: 'roll-back:bus-gateway:started', broken: true, ends: 'old' },
    { at: 'commit:all:done', ends: 'new' },
  ];
  it.each(KILL_POINTS)(
    'SIGKILLed at $at and started again: every service on one version, healthy, nothing left aside',
    { timeout: 180_000 },
    async ({ at, broken, ends }) => {
      const stand = await new StandIns().start();
      const children: ChildProcess[] = [];
      try {
        await stand.intent(broken ? { installer: brokenId } : {});
        const first = startHelper(stand.stateDir);
        children.push(first);
        const exited = new Promise((r) => first.once('exit', r));
        await waitUntil(
          async () =>
            (await readIntent(stand.stateDir))?.steps.some(
              (s) => `${s.step}:${s.service}:${s.status}` === at,
            ) ?? false,
          `the helper to reach ${at}`,
          90_000,
          5,
        );
        first.kill('SIGKILL');
        await exited;
        // What the engine does with a helper that crashed: starts it again, on the same intent.
        const second = startHelper(stand.stateDir);
        children.push(second);
        const code = await new Promise((r) => second.once('exit', r));
        expect(code).toBe(0);
        const intent = (await readIntent(stand.stateDir)) as SelfUpdateIntent;
        expect(intent.outcome?.result).toBe(ends === 'new' ? 'committed' : 'rolled_back');
        if (!broken && ends === 'old') expect(intent.outcome?.reason).toMatch(/stopped unexpectedly/);
        await stand.expectAllOn(ends === 'new' ? newId : oldId);
      } finally {
        for (const child of children) child.kill('SIGKILL');
        await stand.remove();
      }
    },
  );
});

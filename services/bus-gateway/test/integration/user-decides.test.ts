import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  create,
  type DescMessage,
  DownloadProgressSchema,
  DownloadStatus,
  DownloadUpdateRequestSchema,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  type MessageInitShape,
  type MessageShape,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotificationSchema,
  UpdateSettingsSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { ExtraTopics, type InstallJob, Queues, StateKeys, Subjects, Topics } from '@aico-update/shared';
import { waitUntil } from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BusStack, startBusStack } from '../support/stack.ts';

/*
 * The user decides, as a frontend on AICO's bus would: settings set and read back over the bus, a
 * download only when asked (and retried when it failed), an install at a time picked, moved, and
 * another cancelled, a broken release quarantined after its rollback, and the dry run matching what the
 * install then does. The whole system runs for real (see support/stack.ts): what each service does with
 * a setting is seen in what it then does.
 */

let stack: BusStack;
let frontend: BusStack['frontend'];
let redis: Redis;
let nc: NatsConnection;
/** Every install step the installer announced, in order (what the dry run is compared with). */
const steps: { version: string; step: string; service: string; status: string; at: number }[] = [];

beforeAll(async () => {
  stack = await startBusStack({
    installerEnv: { AICO_INSTALLER_BACKUP_PATHS: 'backend=/data', AICO_INSTALLER_TIMEZONE: 'UTC' },
    downloaderEnv: { AICO_DOWNLOADER_RETRY_DELAY_SECONDS: '0.1' },
  });
  ({ frontend } = stack);
  redis = new Redis(stack.redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: stack.nats.url });
  nc.subscribe(Subjects.event(Topics.installProgress), {
    callback: (_e, m) => void steps.push({ ...m.json<(typeof steps)[number]>(), at: Date.now() }),
  });
}, 180_000);

afterAll(async () => {
  await nc?.close();
  redis?.disconnect();
  await stack?.stop();
});

const settings = (fields: MessageInitShape<typeof UpdateSettingsSchema>) => ({
  schema: UpdateSettingsSchema,
  message: create(UpdateSettingsSchema, fields),
});
const install = (updateId: string) => ({
  schema: InstallUpdateRequestSchema,
  message: create(InstallUpdateRequestSchema, { updateId, autoRestart: true }),
});
const download = (updateId: string) => ({
  schema: DownloadUpdateRequestSchema,
  message: create(DownloadUpdateRequestSchema, { updateId }),
});
const check = () => ({ schema: UpdateCheckRequestSchema, message: create(UpdateCheckRequestSchema, {}) });

/** The bus messages of a topic received since `from`, unpacked. */
function seen<Desc extends DescMessage>(topic: string, schema: Desc, from = 0): MessageShape<Desc>[] {
  return frontend.received
    .slice(from)
    .filter((m) => m.topic === topic)
    .map((m) => unpackPayload(m.envelope as Envelope, schema));
}

async function history(
  query = '',
): Promise<{ kind: string; version?: string; reason?: string; code?: string }[]> {
  const response = await fetch(`${stack.api}/history?limit=500${query}`, { headers: stack.headers });
  return ((await response.json()) as { history: [] }).history;
}

async function waitForInstall(version: string, from: number, timeoutMs = 90_000) {
  return waitUntil(
    () =>
      seen(Topics.installComplete, InstallUpdateResponseSchema, from).find((r) =>
        r.message.startsWith(`backend ${version}:`),
      ),
    `the end of the install of ${version}`,
    timeoutMs,
  );
}

describe('the user decides, over the bus', () => {
  it('sets auto_install and the preferred time, reads them back, and an invalid time is refused naming the field', async () => {
    const before = await frontend.ask(ExtraTopics.settings, settings({}), UpdateSettingsSchema);
    expect(before.payload).toMatchObject({
      autoInstall: false,
      preferredInstallTime: '03:00',
      autoDownload: true,
    });

    // A frontend reads, changes, sends back the whole message (proto3 carries every field).
    const changed = await frontend.ask(
      ExtraTopics.settings,
      settings({ ...before.payload, autoInstall: true, preferredInstallTime: '02:30' }),
      UpdateSettingsSchema,
    );
    expect(changed.envelope.attributes.error_code).toBeUndefined();
    expect(changed.payload).toMatchObject({
      autoInstall: true,
      preferredInstallTime: '02:30',
      autoDownload: true,
    });
    const readBack = await frontend.ask(ExtraTopics.settings, settings({}), UpdateSettingsSchema);
    expect(readBack.payload).toMatchObject({ autoInstall: true, preferredInstallTime: '02:30' });

    const refused = await frontend.ask(
      ExtraTopics.settings,
      settings({ ...readBack.payload, preferredInstallTime: '25:00' }),
      UpdateSettingsSchema,
    );
    expect(refused.envelope.attributes.error_code).toBe('INVALID_SETTING');
    expect(refused.envelope.attributes.error_message).toContain(
      'update.preferred_time = "25:00": allowed is a time of day as HH:MM',
    );
    expect(refused.payload.preferredInstallTime).toBe('02:30'); // nothing changed

    // Kept by the installer, on its volume, and shown by the control API with what wins.
    const stored = JSON.parse(await readFile(join(stack.installerDir, 'settings.json'), 'utf8'));
    expect(stored.overrides).toEqual({
      auto_check: true,
      auto_download: true,
      auto_install: true,
      allow_restart: true,
      channel: 'stable',
      check_interval: 24,
      notify_available: true,
      preferred_time: '02:30',
    });
    const api = await (await fetch(`${stack.api}/settings`, { headers: stack.headers })).json();
    expect(api).toMatchObject({ settings: { effective: { auto_install: true, preferred_time: '02:30' } } });
    expect(await history('&kind=settings_changed')).toHaveLength(1);

    // Back to installing nothing by itself, naming only the field meant.
    const reset = await frontend.ask(
      ExtraTopics.settings,
      settings({ autoInstall: false }),
      UpdateSettingsSchema,
      {
        fields: 'auto_install',
      },
    );
    expect(reset.payload).toMatchObject({
      autoInstall: false,
      preferredInstallTime: '02:30',
      autoDownload: true,
    });
  }, 240_000);

  it('auto_download off: nothing downloads by itself; DownloadUpdateRequest downloads; a failed download retried on request succeeds once the server is back', async () => {
    const off = await frontend.ask(
      ExtraTopics.settings,
      settings({ autoDownload: false }),
      UpdateSettingsSchema,
      {
        fields: 'auto_download',
      },
    );
    expect(off.payload.autoDownload).toBe(false);
    await stack.publishBackend('1.1.0');
    const checked = await frontend.ask(Topics.checkRequest, check(), UpdateCheckResponseSchema, {
      forced: 'true',
    });
    expect(checked.payload).toMatchObject({
      updateAvailable: true,
      updateInfo: { updateId: 'backend-1.1.0' },
    });
    // The checker took the setting at once: no download job, nothing downloaded, and it says why.
    await new Promise((r) => setTimeout(r, 1500));
    const downloads = new Queue(Queues.download, { connection: redis });
    expect(await downloads.getJob('download-backend-1.1.0')).toBeUndefined();
    expect(await redis.hget(StateKeys.downloaded, 'backend@1.1.0')).toBeNull();
    expect(await history('&kind=waiting_for_user')).toEqual([
      expect.objectContaining({ version: '1.1.0', reason: expect.stringContaining('auto_download is off') }),
    ]);

    // The server fails every blob: the download gives up after its attempts.
    stack.repo.faults.add(/\/blobs\//, { kind: 'status', status: 503 });
    const from = frontend.received.length;
    const asked = await frontend.ask(
      ExtraTopics.downloadRequest,
      download('backend-1.1.0'),
      DownloadProgressSchema,
    );
    expect(asked.payload, asked.payload.message).toMatchObject({ status: DownloadStatus.DOWNLOAD_PENDING });
    await waitUntil(
      async () => (await downloads.getJob('download-backend-1.1.0'))?.isFailed(),
      'the download to fail for good',
      60_000,
    );
    // The failure is announced after BullMQ marks the job failed (the worker's 'failed' event): wait for it.
    await waitUntil(
      () =>
        seen(Topics.downloadProgress, DownloadProgressSchema, from).at(-1)?.status ===
        DownloadStatus.DOWNLOAD_FAILED,
      'the download failed notice on the bus',
    );
    const failures = await waitUntil(async () => {
      const entries = await history('&kind=download_failed');
      return entries.some((entry) => /given up/.test(entry.reason ?? '')) && entries;
    }, 'the final download failure in the history');
    expect(failures[0]?.reason).toMatch(/given up after 5 attempt/);

    // The server is back: asked again, the download runs from where it was and completes.
    stack.repo.faults.clear();
    const retried = await frontend.ask(
      ExtraTopics.downloadRequest,
      download('backend-1.1.0'),
      DownloadProgressSchema,
    );
    expect(retried.payload.message).toMatch(/retrying the download of backend 1.1.0/);
    await waitUntil(() => redis.hget(StateKeys.downloaded, 'backend@1.1.0'), 'the retried download', 60_000);
    await waitUntil(
      () => seen(Topics.downloadComplete, UpdateNotificationSchema, from).length === 1,
      'the download complete notice on the bus',
    );
    await downloads.close();
  }, 240_000);

  it('schedules an install in a few seconds, moves it, cancels another; each seen as events and in the history', async () => {
    const from = frontend.received.length;
    const inAMinute = new Date(Date.now() + 60_000).toISOString();
    const scheduled = await frontend.ask(
      Topics.installRequest,
      install('backend-1.1.0'),
      InstallUpdateResponseSchema,
      {
        scheduled_for: inAMinute,
      },
    );
    expect(scheduled.payload, scheduled.payload.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_PENDING,
    });
    expect(scheduled.envelope.attributes.scheduled_for).toBe(inAMinute);
    const schedule = await (await fetch(`${stack.api}/schedule`, { headers: stack.headers })).json();
    expect(schedule).toMatchObject({
      schedule: [{ version: '1.1.0', scheduled_for: inAMinute, reason: 'request' }],
    });

    const soon = new Date(Date.now() + 4000);
    const moved = await frontend.ask(
      Topics.installRequest,
      install('backend-1.1.0'),
      InstallUpdateResponseSchema,
      {
        scheduled_for: soon.toISOString(),
      },
    );
    expect(moved.payload.message).toMatch(/moved the install of backend 1\.1\.0 to 20/);
    const done = await waitForInstall('1.1.0', from);
    expect(done, done.message).toMatchObject({ success: true, status: InstallStatus.INSTALL_COMPLETED });
    // It ran at the time picked, not before.
    const started = steps.find((s) => s.version === '1.1.0' && s.status === 'started');
    expect(started?.at).toBeGreaterThanOrEqual(soon.getTime() - 250);
    expect(await stack.deployment.version()).toBe('1.1.0');
    const notices = seen(Topics.restartScheduled, UpdateNotificationSchema, from).map((n) => n.message);
    expect(notices[0]).toMatch(new RegExp(`1\\.1\\.0 will be installed and restarted at ${inAMinute}`));
    expect(notices[1]).toMatch(/1\.1\.0 will be installed and restarted at .* \(moved\)/);

    // Another release, downloaded on request, scheduled, then cancelled: it does not install.
    await stack.publishBackend('1.2.0', { behaviour: 'unhealthy' });
    await frontend.ask(ExtraTopics.downloadRequest, download('backend-1.2.0'), DownloadProgressSchema);
    await waitUntil(() => redis.hget(StateKeys.downloaded, 'backend@1.2.0'), 'the download of 1.2.0', 60_000);
    const later = new Date(Date.now() + 3000).toISOString();
    const planned = await frontend.ask(
      Topics.installRequest,
      install('backend-1.2.0'),
      InstallUpdateResponseSchema,
      {
        scheduled_for: later,
      },
    );
    expect(planned.payload, planned.payload.message).toMatchObject({ success: true });
    const cancelled = await frontend.ask(
      Topics.installRequest,
      install('backend-1.2.0'),
      InstallUpdateResponseSchema,
      {
        action: 'cancel',
      },
    );
    expect(cancelled.payload, cancelled.payload.message).toMatchObject({ success: true });
    expect(seen(Topics.restartScheduled, UpdateNotificationSchema, from).at(-1)?.message).toMatch(
      /install of backend 1\.2\.0 planned for .* is cancelled/,
    );
    await new Promise((r) => setTimeout(r, 4000));
    expect(steps.some((s) => s.version === '1.2.0')).toBe(false);
    expect(await stack.deployment.version()).toBe('1.1.0');
    const kinds = (await history('&service=installer')).map((d) => `${d.kind} ${d.version}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'scheduled 1.1.0',
        'rescheduled 1.1.0',
        'installed 1.1.0',
        'scheduled 1.2.0',
        'cancelled 1.2.0',
      ]),
    );
  }, 240_000);

  it('a broken release rolls back and is quarantined: checks report it, "install newest" refuses it, no automatic install starts; an explicit retry runs it; a newer good release installs', async () => {
    let from = frontend.received.length;
    const installing = await frontend.ask(Topics.installRequest, install(''), InstallUpdateResponseSchema);
    expect(installing.payload.message).toMatch(/backend 1\.2\.0/);
    const failed = await waitForInstall('1.2.0', from);
    expect(failed).toMatchObject({ success: false, status: InstallStatus.INSTALL_FAILED });
    expect(failed.message).toMatch(/rolled_back/);
    expect(await stack.deployment.version()).toBe('1.1.0');

    const checked = await frontend.ask(Topics.checkRequest, check(), UpdateCheckResponseSchema, {
      forced: 'true',
    });
    expect(checked.payload.updateAvailable).toBe(false);
    expect(checked.payload.updateMessage).toMatch(/1\.2\.0 is quarantined \(rolled back here, not offered\)/);
    const status = await (await fetch(`${stack.api}/status`, { headers: stack.headers })).json();
    expect(status).toMatchObject({
      holds: [{ version: '1.2.0', kind: 'quarantined', code: 'HEALTH_GATE_FAILED' }],
    });

    const newest = await frontend.ask(Topics.installRequest, install(''), InstallUpdateResponseSchema);
    expect(newest.payload.success).toBe(false);
    expect(newest.envelope.attributes.error_code).toBe('QUARANTINED');

    // An automatic install of it, queued as the downloader would with auto_install on: refused, nothing runs.
    await frontend.ask(ExtraTopics.settings, settings({ autoInstall: true }), UpdateSettingsSchema, {
      fields: 'auto_install',
    });
    const queue = new Queue(Queues.install, { connection: redis });
    const auto: InstallJob = {
      v: 1,
      release: { component: 'backend', version: '1.2.0' },
      reason: 'auto_install',
    };
    await queue.add('install', auto, { jobId: 'install-backend-1.2.0-auto' });
    await waitUntil(
      async () => (await history('&kind=refused')).find((d) => d.code === 'QUARANTINED'),
      'the automatic install to be refused',
      30_000,
    );
    await frontend.ask(ExtraTopics.settings, settings({ autoInstall: false }), UpdateSettingsSchema, {
      fields: 'auto_install',
    });
    expect(
      steps.filter((s) => s.version === '1.2.0' && s.step === 'swap' && s.status === 'started'),
    ).toHaveLength(1);

    // Named explicitly, it runs again (and, still broken, rolls back again).
    from = frontend.received.length;
    const retry = await frontend.ask(
      Topics.installRequest,
      install('backend-1.2.0'),
      InstallUpdateResponseSchema,
    );
    expect(retry.payload, retry.payload.message).toMatchObject({ success: true });
    expect((await waitForInstall('1.2.0', from)).message).toMatch(/rolled_back/);
    expect(
      steps.filter((s) => s.version === '1.2.0' && s.step === 'swap' && s.status === 'started'),
    ).toHaveLength(2);

    // A newer good release supersedes it: offered, downloaded on request, previewed, installed.
    await stack.publishBackend('1.3.0');
    // (A forced check within 10 s of the last one is answered with that one: ask until a fresh one runs.)
    await waitUntil(
      async () =>
        (await frontend.ask(Topics.checkRequest, check(), UpdateCheckResponseSchema, { forced: 'true' }))
          .payload.updateInfo?.updateId === 'backend-1.3.0',
      'a check that offers 1.3.0',
      30_000,
      1000,
    );
    await frontend.ask(ExtraTopics.downloadRequest, download(''), DownloadProgressSchema);
    await waitUntil(() => redis.hget(StateKeys.downloaded, 'backend@1.3.0'), 'the download of 1.3.0', 60_000);

    // The dry run, over the bus and the control API; then the install does exactly that.
    const preview = await frontend.ask(
      Topics.installRequest,
      install('backend-1.3.0'),
      InstallUpdateResponseSchema,
      {
        action: 'plan',
      },
    );
    const plan = JSON.parse(preview.envelope.attributes.plan as string);
    const byApi = await fetch(`${stack.api}/install/plan`, {
      method: 'POST',
      headers: stack.headers,
      body: JSON.stringify({ component: 'backend', version: '1.3.0' }),
    });
    expect(byApi.status).toBe(200);
    expect(((await byApi.json()) as { plan: unknown }).plan).toMatchObject({ steps: plan.steps });
    expect(plan).toMatchObject({
      version: '1.3.0',
      installed: '1.1.0',
      services: [{ service: 'backend', strategy: 'stop-first', why: expect.stringContaining('the default') }],
      backup: { services: [{ service: 'backend', paths: ['/data'] }] },
      downtime_basis: 'measured',
      operator: { allowed: true },
      automatic: { allowed: false, code: 'NOT_AUTHORIZED' },
    });
    expect(plan.expected_downtime_seconds).toBeGreaterThan(0);
    expect(plan.disk.enough).toBe(true);
    expect(await queue.getJob('install-backend-1.3.0')).toBeUndefined(); // it changed nothing

    from = frontend.received.length;
    const stepsBefore = steps.length;
    await frontend.ask(Topics.installRequest, install(''), InstallUpdateResponseSchema);
    const done = await waitForInstall('1.3.0', from);
    expect(done, done.message).toMatchObject({ success: true });
    expect(await stack.deployment.version()).toBe('1.3.0');
    const ran = steps.slice(stepsBefore).filter((s) => s.version === '1.3.0' && s.status === 'started');
    expect(ran.map((s) => `${s.step}:${s.service}`)).toEqual(plan.steps);
    const backup = JSON.parse(
      await readFile(join(stack.installerDir, 'backups', done.backupId, 'backup.json'), 'utf8'),
    );
    expect(backup.entries.map((e: { service: string; path: string }) => `${e.service}:${e.path}`)).toEqual([
      'backend:/data',
    ]);
    const after = await (await fetch(`${stack.api}/status`, { headers: stack.headers })).json();
    expect(after).toMatchObject({ installed: { backend: '1.3.0' }, holds: [] });
    await queue.close();
  }, 240_000);
});

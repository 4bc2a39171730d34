import { randomUUID } from 'node:crypto';
import {
  create,
  DownloadProgressSchema,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotification_NotificationType,
  UpdateNotificationSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BusStack, startBusStack } from '../support/stack.ts';

/*
 * A frontend that speaks AICO's ZeroMQ bus updates the backend through the gateway: check, watch the
 * download, ask for the install, see it complete; with the real checker, downloader and installer, a real
 * TUF repository over HTTPS, and the real Docker Engine running the sample backend.
 */

let stack: BusStack;
let deployment: BusStack['deployment'];
let frontend: BusStack['frontend'];

beforeAll(async () => {
  stack = await startBusStack();
  ({ deployment, frontend } = stack);
  await stack.publishBackend('1.1.0', { notes: 'Remembers more' });
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

const on = (topic: string) => (m: { topic: string }) => m.topic === topic;

describe('an AICO frontend updates the backend through the bus', () => {
  it('checks, sees the download, asks for the install and sees it complete', async () => {
    const check = randomUUID();
    await frontend.send(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, {}),
      {
        correlation_id: check,
        reply_to: 'update.check.response',
      },
    );
    const checked = await frontend.answer(check, UpdateCheckResponseSchema, 30_000);
    expect(checked.payload).toMatchObject({ updateAvailable: true, forceUpdate: false });
    expect(checked.payload.updateInfo).toMatchObject({
      updateId: 'backend-1.1.0',
      changelog: 'Remembers more',
    });

    const available = await frontend.waitFor(on('update.available'), 30_000);
    expect(unpackPayload(available.envelope as Envelope, UpdateNotificationSchema).type).toBe(
      UpdateNotification_NotificationType.NOTIFICATION_AVAILABLE,
    );
    const complete = await frontend.waitFor(on('update.download.complete'), 60_000);
    expect(unpackPayload(complete.envelope as Envelope, UpdateNotificationSchema).message).toMatch(
      /waits for an install request/,
    );
    const progress = frontend.received
      .filter(on('update.download.progress'))
      .map((m) => unpackPayload(m.envelope as Envelope, DownloadProgressSchema));
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)?.progressPercent).toBe(100);
    expect(progress.at(-1)?.totalBytes).toBeGreaterThan(0n);

    const install = randomUUID();
    await frontend.send(
      'update.install.request',
      InstallUpdateRequestSchema,
      create(InstallUpdateRequestSchema, { updateId: 'backend-1.1.0', autoRestart: true }),
      { correlation_id: install, reply_to: 'update.install.response' },
    );
    const accepted = await frontend.answer(install, InstallUpdateResponseSchema);
    expect(accepted.payload, accepted.payload.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_PENDING,
    });

    await frontend.waitFor(on('update.restart.scheduled'), 30_000);
    const done = await frontend.waitFor(on('update.install.complete'), 90_000);
    const result = unpackPayload(done.envelope as Envelope, InstallUpdateResponseSchema);
    expect(result, result.message).toMatchObject({ success: true, status: InstallStatus.INSTALL_COMPLETED });
    expect(frontend.received.filter(on('update.install.progress')).length).toBeGreaterThan(3);
    expect(await deployment.version()).toBe('1.1.0');
  });
});

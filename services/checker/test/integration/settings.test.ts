import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  EventPublisher,
  ExtraTopics,
  ensureEventStream,
  type SettingsState,
  StateKeys,
  updatePolicySchema,
} from '@aico-update/shared';
import { type SpawnedServer, spawnNats, spawnRedis, waitUntil } from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCHEDULER_ID } from '../../src/adapters/bullmq-queues.ts';
import { startTestChecker } from '../support/harness.ts';

/*
 * The user's settings reach the checker at once: the installer's copy in Redis at start, then each
 * announcement. The check schedule follows check_interval and auto_check in Redis (BullMQ's job
 * scheduler), and an announcement that does not fit its schema, or an older one, changes nothing.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let repo: TestRepository;
let client: Redis;
let nc: NatsConnection;

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  repo = await startTestRepository();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
});

afterAll(async () => {
  await nc.close();
  client.disconnect();
  await repo.close();
  await Promise.all([redis.stop(), nats.stop()]);
});

function state(revision: number, overrides: SettingsState['overrides']): SettingsState {
  const defaults = updatePolicySchema.parse({});
  return {
    v: 1,
    revision,
    updated_at: new Date().toISOString(),
    source: 'test',
    overrides,
    effective: { ...defaults, ...overrides },
  };
}

describe('the checker follows the user’s settings', () => {
  it('takes the copy in Redis at start, then each announcement: the schedule follows at once', async () => {
    await client.set(StateKeys.settings, JSON.stringify(state(3, { check_interval: 6 })));
    const checker = await startTestChecker(repo, redis, nats, { AICO_CHECKER_CHECK_ON_START: 'false' }, true);
    const queue = new Queue('aico-update-check', { connection: client });
    const every = async () => (await queue.getJobScheduler(SCHEDULER_ID))?.every;
    try {
      expect(Number(await every())).toBe(6 * 3600_000);

      const events = new EventPublisher(nc);
      await events.publish(ExtraTopics.settings, state(4, { check_interval: 2 }), 'settings-4');
      await waitUntil(
        async () => Number(await every()) === 2 * 3600_000,
        'the schedule to follow check_interval',
      );

      // Not the schema's: ignored. Older than what it applied: ignored.
      await events.publish(ExtraTopics.settings, { v: 1, revision: 9, effective: 'all on' }, 'settings-bad');
      await events.publish(ExtraTopics.settings, state(1, { check_interval: 12 }), 'settings-1');
      await new Promise((r) => setTimeout(r, 500));
      expect(Number(await every())).toBe(2 * 3600_000);

      await events.publish(
        ExtraTopics.settings,
        state(5, { check_interval: 2, auto_check: false }),
        'settings-5',
      );
      await waitUntil(async () => !(await queue.getJobScheduler(SCHEDULER_ID)), 'scheduled checks off');
      // A requested check still runs.
      expect((await checker.checkNow()).outcome).toBe('up_to_date');
    } finally {
      await queue.close();
      await checker.stop();
    }
  });
});

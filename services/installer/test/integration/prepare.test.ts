import { ExtraTopics, type PrepareRequest, Subjects } from '@aico-update/shared';
import { type SpawnedServer, spawnNats } from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { natsPrepareSignal } from '../../src/adapters/prepare-signal.ts';

/* The prepare signal against a real NATS server, with components answering as AICO's would. */

let nats: SpawnedServer;
let nc: NatsConnection;
const subscriptions: { unsubscribe(): void }[] = [];
const logger = pino({ level: 'silent' });
const request: PrepareRequest = {
  v: 1,
  update_id: 'backend-1.1.0',
  component: 'backend',
  version: '1.1.0',
  services: ['backend'],
  estimated_downtime_seconds: 5,
};

beforeAll(async () => {
  nats = await spawnNats();
  nc = await connect({ servers: nats.url });
});

afterEach(() => {
  for (const sub of subscriptions.splice(0)) sub.unsubscribe();
});

afterAll(async () => {
  await nc.close();
  await nats.stop();
});

/** A component that answers with `answer(n)` to its n-th prepare request (from 1). */
function component(answer: (n: number) => unknown): PrepareRequest[] {
  const seen: PrepareRequest[] = [];
  subscriptions.push(
    nc.subscribe(Subjects.command(ExtraTopics.installPrepare), {
      callback: (_e, m) => {
        seen.push(m.json());
        m.respond(JSON.stringify(answer(seen.length)));
      },
    }),
  );
  return seen;
}

describe('prepare signal', () => {
  it('goes ahead at once when no component listens', async () => {
    const started = Date.now();
    const outcome = await natsPrepareSignal(nc, { timeoutMs: 300, maxDelayMs: 10_000, logger })(request);
    expect(outcome).toMatchObject({ answers: 0, forced: false });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('honours a delay a component asks for, asks again, and goes ahead once every component is ready', async () => {
    const asked = component((n) =>
      n === 1
        ? {
            ready: false,
            suggested_delay_seconds: 1,
            blocking_operations: ['a conversation is being answered'],
          }
        : { ready: true },
    );
    const other = component(() => ({ ready: true, message: 'idle' }));
    const outcome = await natsPrepareSignal(nc, { timeoutMs: 200, maxDelayMs: 10_000, logger })(request);
    expect(outcome).toMatchObject({ answers: 2, forced: false, blocking: [] });
    expect(outcome.waitedMs).toBeGreaterThanOrEqual(1000);
    expect(asked).toHaveLength(2);
    expect(other).toHaveLength(2);
    expect(asked[0]).toEqual(request);
  });

  it('does not let a component hold an update beyond the bound, and ignores malformed answers', async () => {
    component(() => ({ ready: false, suggested_delay_seconds: 60, blocking_operations: ['a long task'] }));
    component(() => 'not an answer');
    const started = Date.now();
    const outcome = await natsPrepareSignal(nc, { timeoutMs: 200, maxDelayMs: 1500, logger })(request);
    expect(outcome).toMatchObject({ forced: true, blocking: ['a long task'] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

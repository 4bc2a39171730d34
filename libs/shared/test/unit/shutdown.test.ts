import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Shutdown } from '../../src/index.ts';

const silent = pino({ level: 'silent' });

describe('Shutdown', () => {
  it('closes in reverse start order, keeps going past a failure, and runs once', async () => {
    const order: string[] = [];
    const shutdown = new Shutdown(silent);
    shutdown.add('redis', () => order.push('redis'));
    shutdown.add('nats', () => {
      order.push('nats');
      throw new Error('boom');
    });
    shutdown.add('http', async () => order.push('http'));
    const [first, second] = await Promise.all([shutdown.stop(), shutdown.stop()]);
    expect(order).toEqual(['http', 'nats', 'redis']);
    expect(first).toBe(false);
    expect(second).toBe(false);
  });

  it('gives up on a closer that never resolves at the deadline and still closes the rest', async () => {
    const order: string[] = [];
    const shutdown = new Shutdown(silent);
    shutdown.add('redis', () => order.push('redis'));
    shutdown.add('stuck', () => new Promise(() => {}));
    expect(await shutdown.stop(100)).toBe(false);
    expect(order).toEqual(['redis']);
  });
});

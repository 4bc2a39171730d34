import {
  DEVICES_KEY,
  type Device,
  deviceReportSchema,
  deviceSchema,
  parseJsonOrUndefined,
  readDevices,
} from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { GatewayMetrics } from './metrics.ts';

/*
 * The frontend devices the gateway hears (update.check.request and update.state.sync from frontends),
 * kept in Redis: id, platform, the frontend version it reports, first and last seen. What a device says
 * is validated before anything is stored (a bad id, an unknown platform, a version that is not semver is
 * refused with what is allowed) and the number of devices is bounded, so a peer cannot fill Redis.
 */

export type Seen = { ok: true; device: Device } | { ok: false; code: string; message: string };

export class DeviceRegistry {
  readonly #redis: Redis;
  readonly #max: number;
  readonly #metrics: GatewayMetrics;

  constructor(redis: Redis, options: { max: number; metrics: GatewayMetrics }) {
    this.#redis = redis;
    this.#max = options.max;
    this.#metrics = options.metrics;
  }

  /** A device reported itself: recorded (its version advances to what it runs now). */
  async seen(
    report: { id: string; platform?: string | undefined; version: string },
    via: Device['via'],
  ): Promise<Seen> {
    const known = await this.get(report.id);
    const parsed = deviceReportSchema.safeParse({ ...report, platform: report.platform || known?.platform });
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => {
        const field = i.path.join('.');
        const value = String((report as Record<string, unknown>)[field] ?? '').slice(0, 40);
        return `${field === 'id' ? 'device_id' : field} ${value ? `"${value}"${value.length >= 40 ? '…' : ''}` : 'missing'}: ${i.message}`;
      });
      return {
        ok: false,
        code: 'BAD_DEVICE',
        message: `the device was not registered: ${problems.join('; ')}`,
      };
    }
    if (!known && (await this.#redis.hlen(DEVICES_KEY)) >= this.#max) {
      return {
        ok: false,
        code: 'DEVICE_LIMIT',
        message: `${this.#max} devices are registered (devices.max); remove one (DELETE /api/v1/devices/<id>) or raise the limit`,
      };
    }
    const now = new Date().toISOString();
    const device: Device = {
      ...parsed.data,
      first_seen: known?.first_seen ?? now,
      last_seen: now,
      ...(via ? { via } : {}),
    };
    await this.#redis.hset(DEVICES_KEY, device.id, JSON.stringify(device));
    if (!known || known.version !== device.version || known.platform !== device.platform)
      await this.refreshGauge();
    return { ok: true, device };
  }

  async get(id: string): Promise<Device | undefined> {
    const parsed = deviceSchema.safeParse(
      parseJsonOrUndefined((await this.#redis.hget(DEVICES_KEY, id)) ?? ''),
    );
    return parsed.success ? parsed.data : undefined;
  }

  list(): Promise<Device[]> {
    return readDevices(this.#redis);
  }

  async remove(id: string): Promise<boolean> {
    const removed = (await this.#redis.hdel(DEVICES_KEY, id)) === 1;
    if (removed) await this.refreshGauge();
    return removed;
  }

  async refreshGauge(): Promise<void> {
    this.#metrics.devices.reset();
    const counts = new Map<string, { platform: string; version: string; n: number }>();
    for (const d of await this.list()) {
      const key = `${d.platform}@${d.version}`;
      const entry = counts.get(key) ?? { platform: d.platform, version: d.version, n: 0 };
      entry.n += 1;
      counts.set(key, entry);
    }
    for (const { platform, version, n } of counts.values())
      this.#metrics.devices.set({ platform, version }, n);
  }
}

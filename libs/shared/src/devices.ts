import type { Redis } from 'ioredis';
import semver from 'semver';
import { z } from 'zod';
import { parseJsonOrUndefined } from './files.ts';
import { type Artifact, PLATFORMS, type ReleaseCustom, semverString } from './release.ts';

/*
 * Frontend devices: every AICO frontend that checks for updates or syncs its state over the bus. The
 * gateway records them (it is the one that hears them) in Redis, which keeps them across restarts; the
 * checker answers each device for its platform and version, the downloader fetches packages only for the
 * platforms devices use. What a device says of itself is its claim: it decides what it is offered, never
 * what is installed on the home server.
 */

export const DEVICES_KEY = 'aico-update:devices';

export const deviceIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/, 'a device id: 1 to 128 letters, digits, . _ : -');

export const deviceSchema = z.object({
  id: deviceIdSchema,
  platform: z.enum(PLATFORMS),
  /** The frontend version it runs, as it last reported. */
  version: semverString,
  first_seen: z.iso.datetime(),
  last_seen: z.iso.datetime(),
  /** How it reached the gateway. */
  via: z.enum(['zeromq', 'nats', 'api']).optional(),
});
export type Device = z.infer<typeof deviceSchema>;

/** What a device reports: parsed at the edge, with a message a person can act on. */
export const deviceReportSchema = z.object({
  id: deviceIdSchema,
  platform: z.enum(PLATFORMS, { message: `a platform: one of ${PLATFORMS.join(', ')}` }),
  version: semverString,
});
export type DeviceReport = z.infer<typeof deviceReportSchema>;

/** The registered devices; entries that do not parse are left out. */
export async function readDevices(redis: Redis): Promise<Device[]> {
  const devices: Device[] = [];
  for (const raw of Object.values(await redis.hgetall(DEVICES_KEY))) {
    const parsed = deviceSchema.safeParse(parseJsonOrUndefined(raw));
    if (parsed.success) devices.push(parsed.data);
  }
  return devices.sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * The devices a frontend release concerns: on a platform it reaches (a package for it, or the store)
 * and running an older frontend. Empty for other components.
 */
export function devicesConcerned(
  devices: readonly Device[],
  release: Pick<ReleaseCustom, 'component' | 'version' | 'store_platforms'>,
  artifacts: readonly Pick<Artifact, 'platform'>[],
): string[] {
  if (release.component !== 'frontend') return [];
  const platforms = new Set<string>([
    ...artifacts.flatMap((a) => (a.platform ? [a.platform] : [])),
    ...(release.store_platforms ?? []),
  ]);
  return devices
    .filter((d) => platforms.has(d.platform) && semver.lt(d.version, release.version))
    .map((d) => d.id);
}

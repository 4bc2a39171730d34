import {
  httpSchema,
  logSchema,
  natsSchema,
  numberSetting,
  redisSchema,
  updatePolicySchema,
} from '@aico-update/shared';
import { z } from 'zod';
import { isTimeZone } from './domain/install-window.ts';

const nameMap = (what: string, value: z.ZodString) =>
  z
    .record(z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/), value)
    .default({})
    .describe(what);

export const installerConfigSchema = z.strictObject({
  update: updatePolicySchema,
  installer: z
    .strictObject({
      cache_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/cache')
        .describe('the downloader’s verified blob cache (the same volume)'),
      docker_socket: z
        .string()
        .min(1)
        .default('/var/run/docker.sock')
        .describe('the Docker Engine socket path'),
      state_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/installer')
        .describe('a writable folder on a persistent volume for the install journal'),
      lock_seconds: numberSetting({
        default: 300,
        min: 5,
        max: 86_400,
        unit: 'seconds',
        allowed: 'seconds after which the install job of a crashed installer is replayed (5 to 86400)',
      }),
      services: nameMap(
        'a map of release service name to the container that runs it (environment form: backend=aico-backend)',
        z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/),
      ),
      probes: nameMap(
        'a map of service name to an HTTP health URL checked in addition to the HEALTHCHECK (e.g. backend=http://aico-backend:8771/api/v1/health)',
        z.string().regex(/^https?:\/\//),
      ),
      health_timeout_seconds: numberSetting({ default: 120, min: 1, max: 3600, unit: 'seconds' }),
      timezone: z
        .string()
        .default(process.env.TZ || 'UTC')
        .refine(isTimeZone, { message: 'an IANA time zone such as Europe/Berlin or UTC' })
        .describe(
          'the IANA time zone update.preferred_time is in, such as Europe/Berlin (default: $TZ, else UTC)',
        ),
      window_minutes: numberSetting({
        default: 120,
        min: 1,
        max: 1440,
        integer: true,
        unit: 'minutes',
        allowed: 'minutes after update.preferred_time during which automatic installs may start (1 to 1440)',
      }),
      soak_seconds: numberSetting({
        default: 30,
        min: 0,
        max: 3600,
        unit: 'seconds',
        allowed:
          'seconds a new container must stay healthy, without restarting, before the update is committed (0 to 3600)',
      }),
    })
    .prefault({}),
  redis: redisSchema,
  nats: natsSchema,
  http: httpSchema(8083),
  log: logSchema,
});

export type InstallerConfig = z.output<typeof installerConfigSchema>;

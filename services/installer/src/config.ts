import {
  httpSchema,
  installedSeedSchema,
  logSchema,
  natsSchema,
  numberSetting,
  redisSchema,
  tufStateSchema,
  updatePolicySchema,
} from '@aico-update/shared';
import { z } from 'zod';
import { isTimeZone } from './domain/install-window.ts';

const absolutePath = z.string().regex(/^\/[^\0]*$/, { message: 'an absolute path inside the container' });

const nameMap = <T extends z.ZodType>(what: string, value: T) =>
  z
    .record(z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/), value)
    .default({})
    .describe(what);

export const installerConfigSchema = z.strictObject({
  update: updatePolicySchema,
  /** The installer's own trusted TUF metadata: it verifies every release itself before it loads anything. */
  tuf: tufStateSchema('/var/lib/aico-update/installer/tuf'),
  installed: installedSeedSchema,
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
      updater_containers: nameMap(
        'the update system’s own containers by service (checker, downloader, bus-gateway), where compose’s labels do not name them (environment form: checker=aico-checker)',
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
      strategy: nameMap(
        'a map of service name to swap strategy, stop-first (default) or start-first (no downtime; needs a service without a fixed host port), e.g. backend=start-first',
        z.enum(['stop-first', 'start-first']),
      ),
      drain_seconds: numberSetting({
        default: 2,
        min: 0,
        max: 300,
        unit: 'seconds',
        allowed:
          'seconds a start-first swap lets the old container finish requests, out of its networks, before stopping it (0 to 300)',
      }),
      prepare_timeout_seconds: numberSetting({
        default: 5,
        min: 0.1,
        max: 60,
        unit: 'seconds',
        allowed: 'seconds to wait for components to answer the prepare signal (0.1 to 60)',
      }),
      prepare_max_delay_seconds: numberSetting({
        default: 300,
        min: 0,
        max: 3600,
        unit: 'seconds',
        allowed:
          'the longest a component may delay an install by asking for it in its prepare answer (0 to 3600)',
      }),
      backup: z
        .strictObject({
          dir: z
            .string()
            .min(1)
            .default('/var/lib/aico-update/backups')
            .describe('a folder on a persistent volume for the data backups taken before each install'),
          keep: numberSetting({
            default: 3,
            min: 1,
            max: 100,
            integer: true,
            unit: 'backups',
            allowed: 'how many backups to keep, newest first (1 to 100)',
          }),
          paths: nameMap(
            'a map of service name to the paths inside its container (volumes or bind mounts, separated by :) backed up before an install and restored on a rollback, e.g. backend=/var/lib/aico',
            z
              .string()
              .transform((value) => value.split(':').filter(Boolean))
              .pipe(z.array(absolutePath).min(1)),
          ),
          hooks: z
            .array(
              z.strictObject({
                container: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/),
                file: absolutePath.describe('the file the backup command writes, kept with the backup'),
                backup: z.array(z.string()).min(1),
                restore: z.array(z.string()).min(1),
              }),
            )
            .default([])
            .describe(
              'commands run inside a container before an install (e.g. a database dump into `file`) and on a rollback (its restore); YAML only',
            ),
        })
        .prefault({}),
      circuit_breaker_failures: numberSetting({
        default: 3,
        min: 0,
        max: 100,
        integer: true,
        unit: 'failures',
        allowed:
          'failed automatic installs of a component within installer.circuit_breaker_hours that pause its automatic installs until an operator resumes them (0: never pause; up to 100)',
      }),
      circuit_breaker_hours: numberSetting({
        default: 24,
        above: 0,
        max: 8760,
        unit: 'hours',
        allowed: 'the period, in hours, over which failed automatic installs are counted (> 0 and ≤ 8760)',
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

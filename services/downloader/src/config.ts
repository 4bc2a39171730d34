import {
  commaListSetting,
  httpSchema,
  logSchema,
  natsSchema,
  numberSetting,
  PLATFORMS,
  redisSchema,
  tufStateSchema,
  updatePolicySchema,
  updateServerSchema,
} from '@aico-update/shared';
import { z } from 'zod';

export const downloaderConfigSchema = z.strictObject({
  update: updatePolicySchema,
  update_server: updateServerSchema,
  tuf: tufStateSchema('/var/lib/aico-update/downloader'),
  downloader: z
    .strictObject({
      cache_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/cache')
        .describe(
          'a writable folder on a persistent volume: the verified blob cache (shared with the installer)',
        ),
      frontend_platforms: commaListSetting(
        z.enum(PLATFORMS),
        `frontend platforms whose packages are always fetched, beside those registered devices use (comma-separated: ${PLATFORMS.join(', ')})`,
      ),
      concurrency: numberSetting({
        default: 1,
        min: 1,
        max: 8,
        integer: true,
        unit: 'releases downloaded at once',
      }),
      parallel_files: numberSetting({
        default: 2,
        min: 1,
        max: 16,
        integer: true,
        unit: 'files of one release fetched at once',
      }),
      max_kib_per_second: numberSetting({
        default: 0,
        min: 0,
        max: 10_000_000,
        unit: 'KiB/s',
        allowed: 'a bandwidth cap in KiB/s, 0 for none (e.g. 2048 for 2 MiB/s)',
      }),
      free_space_headroom_mib: numberSetting({ default: 256, min: 0, max: 1_000_000, unit: 'MiB' }),
      progress_interval_ms: numberSetting({
        default: 250,
        min: 50,
        max: 60_000,
        integer: true,
        unit: 'milliseconds',
      }),
      metadata_refresh_minutes: numberSetting({
        default: 60,
        min: 0,
        max: 1440,
        unit: 'minutes',
        allowed:
          'minutes between refreshes of the TUF metadata mirror the installer verifies releases with (0 to 1440; 0: only when downloading)',
      }),
      retry_delay_seconds: numberSetting({
        default: 30,
        min: 0.1,
        max: 3600,
        unit: 'seconds',
        allowed:
          'seconds before the first retry of a failed download it queues on request (doubling for each of the 5 attempts; 0.1 to 3600)',
      }),
      lock_seconds: numberSetting({
        default: 30,
        min: 2,
        max: 3600,
        unit: 'seconds',
        allowed: 'seconds after which a download of a crashed downloader is taken over (2 to 3600)',
      }),
    })
    .prefault({}),
  redis: redisSchema,
  nats: natsSchema,
  http: httpSchema(8082),
  log: logSchema,
});

export type DownloaderConfig = z.output<typeof downloaderConfigSchema>;

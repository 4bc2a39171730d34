import {
  booleanSetting,
  httpSchema,
  installedSeedSchema,
  logSchema,
  natsSchema,
  numberSetting,
  redisSchema,
  updatePolicySchema,
  updateServerSchema,
} from '@aico-update/shared';
import { z } from 'zod';

export const checkerConfigSchema = z.strictObject({
  update: updatePolicySchema,
  update_server: updateServerSchema,
  tuf: z
    .strictObject({
      state_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/checker')
        .describe('a writable folder on a persistent volume for trusted TUF metadata and verified manifests'),
      trusted_root: z
        .string()
        .min(1)
        .default('/etc/aico-update/root.json')
        .describe('the path of the initial root.json the publisher distributes'),
    })
    .prefault({}),
  installed: installedSeedSchema,
  checker: z
    .strictObject({
      request_cache_seconds: numberSetting({ default: 60, min: 0, max: 86_400, unit: 'seconds' }),
      check_on_start: booleanSetting(true),
    })
    .prefault({}),
  redis: redisSchema,
  nats: natsSchema,
  http: httpSchema(8081),
  log: logSchema,
});

export type CheckerConfig = z.output<typeof checkerConfigSchema>;

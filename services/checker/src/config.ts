import {
  booleanSetting,
  httpSchema,
  installedSeedSchema,
  logSchema,
  natsSchema,
  numberSetting,
  redisSchema,
  tufStateSchema,
  updatePolicySchema,
  updateServerSchema,
} from '@aico-update/shared';
import { z } from 'zod';

export const checkerConfigSchema = z.strictObject({
  update: updatePolicySchema,
  update_server: updateServerSchema,
  tuf: tufStateSchema('/var/lib/aico-update/checker'),
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

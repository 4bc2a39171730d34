import type { Redis } from 'ioredis';
import { parseJsonOrUndefined } from './files.ts';
import {
  type CheckResponse,
  checkResponseSchema,
  type DownloadedRecord,
  downloadedRecordSchema,
  type InstallerStatus,
  installerStatusSchema,
} from './messages.ts';
import { type SettingsState, settingsStateSchema } from './settings.ts';
import { StateKeys } from './topics.ts';

/*
 * Shared state read back from Redis. Redis is written by several services (and, to an attacker on its
 * network, by anyone): every value is parsed with its schema, and one that does not fit counts as
 * absent, so it can neither crash a reader nor be taken for what it claims.
 */

/** The last check response, or undefined when there is none or it does not parse. */
export async function readLastCheck(redis: Redis): Promise<CheckResponse | undefined> {
  const raw = await redis.get(StateKeys.lastCheck);
  const parsed = checkResponseSchema.safeParse(raw === null ? undefined : parseJsonOrUndefined(raw));
  return parsed.success ? parsed.data : undefined;
}

/** The downloader's records, `<component>@<version>` → record; values that do not parse are left out. */
export async function readDownloaded(redis: Redis): Promise<Record<string, DownloadedRecord>> {
  const out: Record<string, DownloadedRecord> = {};
  for (const [key, raw] of Object.entries(await redis.hgetall(StateKeys.downloaded))) {
    const parsed = downloadedRecordSchema.safeParse(parseJsonOrUndefined(raw));
    if (parsed.success) out[key] = parsed.data;
  }
  return out;
}

/** The installer's copy of its holds and schedule (for display and for what the checker offers). */
export async function readInstallerStatus(redis: Redis): Promise<InstallerStatus | undefined> {
  const raw = await redis.get(StateKeys.installerStatus);
  const parsed = installerStatusSchema.safeParse(raw === null ? undefined : parseJsonOrUndefined(raw));
  return parsed.success ? parsed.data : undefined;
}

/** The installer's copy of the settings in force. */
export async function readSettings(redis: Redis): Promise<SettingsState | undefined> {
  const raw = await redis.get(StateKeys.settings);
  const parsed = settingsStateSchema.safeParse(raw === null ? undefined : parseJsonOrUndefined(raw));
  return parsed.success ? parsed.data : undefined;
}

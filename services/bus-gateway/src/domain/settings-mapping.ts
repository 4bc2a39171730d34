import { create, type UpdateSettings, UpdateSettingsSchema } from '@aico-update/aico-bus';
import type { UpdatePolicy } from '@aico-update/shared';

/* The user's settings on AICO's bus: UpdateSettings in and out (the installer validates and keeps them). */

/** AICO's UpdateSettings for the settings in force. */
export function settingsToBus(policy: UpdatePolicy): UpdateSettings {
  return create(UpdateSettingsSchema, {
    autoCheck: policy.auto_check,
    checkIntervalHours: Math.max(1, Math.round(policy.check_interval)),
    autoDownload: policy.auto_download,
    autoInstall: policy.auto_install,
    includeBeta: policy.channel !== 'stable',
    preferredInstallTime: policy.preferred_time,
    notifyAvailable: policy.notify_available,
    allowRestart: policy.allow_restart,
    updateChannel: policy.channel,
  });
}

const BUS_SETTING_FIELDS = {
  auto_check: (m: UpdateSettings) => m.autoCheck,
  check_interval_hours: (m: UpdateSettings) => m.checkIntervalHours,
  auto_download: (m: UpdateSettings) => m.autoDownload,
  auto_install: (m: UpdateSettings) => m.autoInstall,
  include_beta: (m: UpdateSettings) => (m.includeBeta ? 'beta' : 'stable'),
  preferred_install_time: (m: UpdateSettings) => m.preferredInstallTime,
  notify_available: (m: UpdateSettings) => m.notifyAvailable,
  allow_restart: (m: UpdateSettings) => m.allowRestart,
  update_channel: (m: UpdateSettings) => m.updateChannel,
} as const;
const POLICY_KEY_OF: Record<keyof typeof BUS_SETTING_FIELDS, string> = {
  auto_check: 'auto_check',
  check_interval_hours: 'check_interval',
  auto_download: 'auto_download',
  auto_install: 'auto_install',
  include_beta: 'channel',
  preferred_install_time: 'preferred_time',
  notify_available: 'notify_available',
  allow_restart: 'allow_restart',
  update_channel: 'channel',
};

/**
 * What an UpdateSettings message asks to change, as `update.*` keys; undefined for a read. A proto3
 * message carries every field, so a message sets all of them (a frontend reads, changes, sends back),
 * unless the envelope's `fields` attribute lists the ones meant (comma-separated proto field names).
 * An empty message (no interval, no time, no channel) is a read. Validation is the installer's.
 */
export function settingsFromBus(
  message: UpdateSettings,
  fields: string | undefined,
): { change: Record<string, unknown> } | { read: true } | { unknownFields: string[] } {
  if (fields !== undefined && fields.trim() !== '') {
    const named = fields
      .split(',')
      .map((f) => f.trim())
      .filter(Boolean);
    const unknown = named.filter((f) => !(f in BUS_SETTING_FIELDS));
    if (unknown.length > 0) return { unknownFields: unknown };
    const change: Record<string, unknown> = {};
    for (const field of named as (keyof typeof BUS_SETTING_FIELDS)[]) {
      change[POLICY_KEY_OF[field]] = BUS_SETTING_FIELDS[field](message);
    }
    return { change };
  }
  if (message.checkIntervalHours === 0 && !message.preferredInstallTime && !message.updateChannel)
    return { read: true };
  return {
    change: {
      auto_check: message.autoCheck,
      ...(message.checkIntervalHours ? { check_interval: message.checkIntervalHours } : {}),
      auto_download: message.autoDownload,
      auto_install: message.autoInstall,
      ...(message.preferredInstallTime ? { preferred_time: message.preferredInstallTime } : {}),
      notify_available: message.notifyAvailable,
      allow_restart: message.allowRestart,
      channel: message.updateChannel || (message.includeBeta ? 'beta' : 'stable'),
    },
  };
}

import {
  ComponentType,
  create,
  type DescMessage,
  DownloadProgressSchema,
  DownloadStatus,
  InstallStatus,
  InstallUpdateResponseSchema,
  type MessageShape,
  UpdateNotification_NotificationType as NotificationType,
  SecurityImpact,
  timestampFromDate,
  UpdateCheckResponseSchema,
  UpdateNotificationSchema,
  type UpdateSettings,
  UpdateSettingsSchema,
  UpdateStatus,
  UpdateType,
  type VersionInfo,
  VersionInfoSchema,
} from '@aico-update/aico-bus';
import {
  type CheckResponse,
  type Component,
  checkResponseSchema,
  type DeviceAnswer,
  type DownloadComplete,
  type DownloadProgress,
  downloadCompleteSchema,
  downloadProgressSchema,
  type InstallComplete,
  type InstallProgress,
  installCompleteSchema,
  installProgressSchema,
  type ReleaseRef,
  type RestartRequired,
  type RestartScheduled,
  restartRequiredSchema,
  restartScheduledSchema,
  Topics,
  type UpdateAvailable,
  type UpdatePolicy,
  updateAvailableSchema,
} from '@aico-update/shared';
import { diff } from 'semver';
import type { z } from 'zod';

/*
 * The bus mapping: which AICO message each topic carries, and how the update system's internal JSON
 * becomes it. AICO defines the bytes; the update system defines the behaviour. Topics AICO has no
 * message of its own for use the nearest one (see the README's bus table).
 */

export interface BusPayload<Desc extends DescMessage = DescMessage> {
  schema: Desc;
  message: MessageShape<Desc>;
}

const payload = <Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): BusPayload =>
  ({ schema, message }) as unknown as BusPayload;

const HELD_WORDS = {
  quarantined: 'is quarantined (rolled back here, not offered)',
  skipped: 'is skipped',
  strands_devices: 'is held back',
} as const;

/** A frontend event's devices, as words after its message. */
function forDevices(devices: readonly string[] | undefined): string {
  return devices && devices.length > 0 ? ` (for devices ${devices.join(', ')})` : '';
}

/** `update_id` on the bus: `<component>-<version>`, what an install request names. */
export function updateIdOf(release: { component: string; version: string }): string {
  return `${release.component}-${release.version}`;
}

export function parseUpdateId(updateId: string): { component: Component; version: string } | undefined {
  const match = /^(backend|frontend|updater)-(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?)$/.exec(updateId);
  return match ? { component: match[1] as Component, version: match[2] as string } : undefined;
}

export function componentOf(type: ComponentType): Component {
  return type === ComponentType.COMPONENT_FRONTEND ? 'frontend' : 'backend';
}

export function componentTypeOf(component: string): ComponentType {
  if (component === 'frontend') return ComponentType.COMPONENT_FRONTEND;
  if (component === 'backend') return ComponentType.COMPONENT_BACKEND;
  return ComponentType.COMPONENT_MODULE;
}

function versionInfo(release: { version: string; channel?: string }): VersionInfo {
  return create(VersionInfoSchema, { version: release.version, channel: release.channel ?? '' });
}

function updateType(from: string, release: ReleaseRef): UpdateType {
  if (release.critical) return UpdateType.SECURITY;
  const change = diff(from, release.version);
  if (change === 'major' || change === 'premajor') return UpdateType.MAJOR;
  if (change === 'minor' || change === 'preminor') return UpdateType.MINOR;
  if (change === 'patch' || change === 'prepatch' || change === 'prerelease') return UpdateType.PATCH;
  return UpdateType.UNKNOWN;
}

/** `update.check.response` (UpdateCheckResponse) for one component of a check. */
export function checkResponseToBus(response: CheckResponse, component: Component) {
  const entry = response.components.find((c) => c.component === component);
  const update = entry?.update;
  const message =
    response.outcome === 'failed'
      ? `the check failed (${response.error?.kind ?? 'unknown'}): ${response.error?.message ?? ''}`
      : update
        ? `${component} ${update.version} is available (installed: ${entry?.installed})`
        : entry
          ? `${component} ${entry.installed} is up to date${entry.blocked ? `; ${entry.blocked.version} needs ${entry.blocked.min_from_version} first` : ''}`
          : `no ${component} is known to the update system`;
  const held = (entry?.held ?? []).map((h) => `; ${h.version} ${HELD_WORDS[h.kind]}: ${h.reason}`);
  return create(UpdateCheckResponseSchema, {
    updateAvailable: Boolean(update),
    ...(update || entry ? { latestVersion: versionInfo(update ?? { version: entry?.installed ?? '' }) } : {}),
    ...(update && entry
      ? {
          updateInfo: {
            updateId: updateIdOf(update),
            targetVersion: versionInfo(update),
            componentType: componentTypeOf(component),
            componentId: component,
            sizeBytes: BigInt(update.size_bytes),
            changelog: update.notes,
            releaseDate: timestampFromDate(new Date(update.released_at)),
            requiresRestart: true,
            updateType: updateType(entry.installed, update),
            securityImpact: update.critical ? SecurityImpact.CRITICAL : SecurityImpact.UNKNOWN,
          },
        }
      : {}),
    forceUpdate: update?.critical ?? false,
    updateMessage: `${message}${held.join('')}`,
  });
}

/** Where a device fetches packages and the TUF metadata that proves them (the control API's base). */
export const PACKAGES_PATH = '/api/v1/packages';

/**
 * A device's answer as AICO's UpdateCheckResponse: an update (its package on the home server, named in
 * the attributes `package_target`, `package_url`, `package_sha256` and `metadata_url`: a TUF mirror),
 * an update through the app store (`delivery=store`), or none (`waits_for_backend` says for what).
 */
export function deviceAnswerToBus(answer: DeviceAnswer): {
  response: MessageShape<typeof UpdateCheckResponseSchema>;
  attributes: Record<string, string>;
} {
  const release = answer.release;
  const offered = (answer.answer === 'update' || answer.answer === 'store') && release ? release : undefined;
  const attributes: Record<string, string> = { device_answer: answer.answer };
  if (answer.answer === 'update' && answer.package) {
    const pkg = answer.package;
    const slash = pkg.target.lastIndexOf('/') + 1;
    Object.assign(attributes, {
      package_target: pkg.target,
      package_url: `${PACKAGES_PATH}/targets/${pkg.target.slice(0, slash)}${pkg.sha256}.${pkg.target.slice(slash)}`,
      package_sha256: pkg.sha256,
      metadata_url: `${PACKAGES_PATH}/metadata/`,
    });
  }
  if (answer.answer === 'store') attributes.delivery = 'store';
  if (answer.answer === 'waits_for_backend' && answer.needs_backend)
    attributes.waits_for_backend = answer.needs_backend;
  return {
    response: create(UpdateCheckResponseSchema, {
      updateAvailable: Boolean(offered),
      latestVersion: versionInfo(offered ?? { version: answer.installed }),
      ...(offered
        ? {
            updateInfo: {
              updateId: updateIdOf(offered),
              targetVersion: versionInfo(offered),
              componentType: ComponentType.COMPONENT_FRONTEND,
              componentId: `frontend-${answer.platform}`,
              sizeBytes: BigInt(answer.package?.length ?? 0),
              changelog: offered.notes,
              releaseDate: timestampFromDate(new Date(offered.released_at)),
              requiresRestart: true,
              updateType: updateType(answer.installed, offered),
              securityImpact: offered.critical ? SecurityImpact.CRITICAL : SecurityImpact.UNKNOWN,
            },
          }
        : {}),
      forceUpdate: offered?.critical ?? false,
      updateMessage: answer.reason,
    }),
    attributes,
  };
}

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

function notification(
  type: NotificationType,
  release: { component: string; version: string; channel?: string; critical?: boolean },
  message: string,
  extra: { expiry?: Date; actions?: string[] } = {},
) {
  return create(UpdateNotificationSchema, {
    type,
    updateId: updateIdOf(release),
    version: versionInfo(release),
    message,
    isCritical: release.critical ?? false,
    ...(extra.expiry ? { expiry: timestampFromDate(extra.expiry) } : {}),
    actions: extra.actions ?? [],
  });
}

const DOWNLOAD_STATUS = {
  in_progress: DownloadStatus.DOWNLOAD_IN_PROGRESS,
  completed: DownloadStatus.DOWNLOAD_COMPLETED,
  failed: DownloadStatus.DOWNLOAD_FAILED,
} as const;

/** An event whose payload is not what its topic carries: dropped (and counted), never retried. */
export class PoisonEvent extends Error {
  override name = 'PoisonEvent';
}

const EVENT_SCHEMAS: Record<string, z.ZodType> = {
  [Topics.checkResponse]: checkResponseSchema,
  [Topics.available]: updateAvailableSchema,
  [Topics.downloadProgress]: downloadProgressSchema,
  [Topics.downloadComplete]: downloadCompleteSchema,
  [Topics.installProgress]: installProgressSchema,
  [Topics.installComplete]: installCompleteSchema,
  [Topics.restartRequired]: restartRequiredSchema,
  [Topics.restartScheduled]: restartScheduledSchema,
};

/** The event's payload checked against its topic's schema; PoisonEvent when it does not fit. */
export function parseEvent(topic: string, payload: unknown): unknown {
  const schema = EVENT_SCHEMAS[topic];
  if (!schema) return payload;
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    throw new PoisonEvent(
      `an ${topic} event that does not fit its schema (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message})`,
    );
  }
  return parsed.data;
}

/**
 * An internal event (already checked by parseEvent) as the AICO message published for it; undefined for events the bus does not get
 * (a check response the gateway itself asked for is answered to its requester instead).
 */
export function eventToBus(topic: string, event: unknown): BusPayload | undefined {
  switch (topic) {
    case Topics.checkResponse: {
      const response = event as CheckResponse;
      if (response.request_id?.startsWith('bus:')) return undefined;
      return payload(UpdateCheckResponseSchema, checkResponseToBus(response, 'backend'));
    }
    case Topics.available: {
      const { release, installed, devices } = event as UpdateAvailable;
      return payload(
        UpdateNotificationSchema,
        notification(
          NotificationType.NOTIFICATION_AVAILABLE,
          release,
          `${release.component} ${release.version} is available (installed: ${installed})${release.notes ? `: ${release.notes}` : ''}${forDevices(devices)}`,
          { actions: ['install'] },
        ),
      );
    }
    case Topics.downloadProgress: {
      const progress = event as DownloadProgress;
      return payload(
        DownloadProgressSchema,
        create(DownloadProgressSchema, {
          updateId: updateIdOf(progress),
          bytesDownloaded: BigInt(progress.bytes_done),
          totalBytes: BigInt(progress.total_bytes),
          progressPercent: progress.percent,
          status: DOWNLOAD_STATUS[progress.status],
          message: progress.message ?? '',
          estimatedRemainingSeconds: Math.round(progress.eta_seconds ?? 0),
        }),
      );
    }
    case Topics.downloadComplete: {
      const { release, install, devices } = event as DownloadComplete;
      return payload(
        UpdateNotificationSchema,
        notification(
          NotificationType.NOTIFICATION_DOWNLOADED,
          release,
          `${release.component} ${release.version} is downloaded and verified; ${install === 'waits' ? 'it waits for an install request' : `it will be installed (${install})`}${forDevices(devices)}`,
          install === 'waits' ? { actions: ['install'] } : {},
        ),
      );
    }
    case Topics.installProgress: {
      const p = event as InstallProgress;
      return payload(
        InstallUpdateResponseSchema,
        create(InstallUpdateResponseSchema, {
          success: true,
          status: InstallStatus.INSTALL_IN_PROGRESS,
          message: `${p.kind === 'rollback' ? 'rollback' : 'install'} of ${p.component} ${p.version}: step ${p.index + 1}/${p.of} ${p.step}${p.service === '*' ? '' : ` ${p.service}`} ${p.status}`,
        }),
      );
    }
    case Topics.installComplete: {
      const c = event as InstallComplete;
      const status = c.success
        ? InstallStatus.INSTALL_COMPLETED
        : c.outcome === 'rolled_back' || c.outcome === 'failed'
          ? InstallStatus.INSTALL_FAILED
          : InstallStatus.INSTALL_CANCELED;
      return payload(
        InstallUpdateResponseSchema,
        create(InstallUpdateResponseSchema, {
          success: c.success,
          status,
          message: `${c.release.component} ${c.release.version}: ${c.outcome}${c.reason ? ` (${c.reason})` : ''}${c.running_version ? `; ${c.release.component} is back and runs ${c.running_version}` : ''}`,
          backupId: c.backup_id ?? '',
        }),
      );
    }
    case Topics.restartRequired: {
      const r = event as RestartRequired;
      return payload(
        UpdateNotificationSchema,
        notification(
          NotificationType.NOTIFICATION_RESTART_REQUIRED,
          r,
          `${r.message}${forDevices(r.devices)}`,
          {
            actions: ['restart'],
          },
        ),
      );
    }
    case Topics.restartScheduled: {
      const r = event as RestartScheduled;
      const downtime =
        r.expected_downtime_seconds !== undefined
          ? `; expect about ${Math.ceil(r.expected_downtime_seconds)} s of downtime`
          : '';
      const text =
        r.change === 'cancelled'
          ? `the install of ${r.component} ${r.version} planned for ${r.scheduled_for} is cancelled`
          : `${r.component} ${r.version} will be installed and restarted at ${r.scheduled_for}${r.change === 'rescheduled' ? ' (moved)' : ''} (${r.reason})${downtime}`;
      return payload(
        UpdateNotificationSchema,
        notification(
          NotificationType.NOTIFICATION_INSTALLING,
          r,
          r.message ? `${text}: ${r.message}` : text,
          {
            expiry: new Date(r.scheduled_for),
            actions: r.change === 'cancelled' ? ['install'] : ['reschedule', 'cancel'],
          },
        ),
      );
    }
    default:
      return undefined;
  }
}

/** AICO's UpdateStatus for a component, from what the system knows of it. */
export function updateStatusOf(state: {
  checkOutcome?: string | undefined;
  available?: boolean;
  downloaded?: boolean;
  installing?: boolean;
  restartRequired?: boolean;
}): UpdateStatus {
  if (state.installing) return UpdateStatus.INSTALLING;
  if (state.restartRequired) return UpdateStatus.RESTART_REQUIRED;
  if (state.downloaded) return UpdateStatus.READY_TO_INSTALL;
  if (state.available) return UpdateStatus.UPDATE_AVAILABLE;
  if (state.checkOutcome === 'failed') return UpdateStatus.FAILED;
  if (state.checkOutcome) return UpdateStatus.UP_TO_DATE;
  return UpdateStatus.UNKNOWN;
}

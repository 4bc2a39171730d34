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
  UpdateStatus,
  UpdateType,
  type VersionInfo,
  VersionInfoSchema,
} from '@aico-update/aico-bus';
import {
  type CheckResponse,
  type Component,
  checkResponseSchema,
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

export function versionInfo(release: { version: string; channel?: string }): VersionInfo {
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

/** AICO's UpdateInfo of a release offered to a component that runs `installed`. */
export function updateInfoOf(
  release: ReleaseRef,
  installed: string,
  what: { componentType: ComponentType; componentId: string; sizeBytes: number },
) {
  return {
    updateId: updateIdOf(release),
    targetVersion: versionInfo(release),
    componentType: what.componentType,
    componentId: what.componentId,
    sizeBytes: BigInt(what.sizeBytes),
    changelog: release.notes,
    releaseDate: timestampFromDate(new Date(release.released_at)),
    requiresRestart: true,
    updateType: updateType(installed, release),
    securityImpact: release.critical ? SecurityImpact.CRITICAL : SecurityImpact.UNKNOWN,
  };
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
          updateInfo: updateInfoOf(update, entry.installed, {
            componentType: componentTypeOf(component),
            componentId: component,
            sizeBytes: update.size_bytes,
          }),
        }
      : {}),
    forceUpdate: update?.critical ?? false,
    updateMessage: `${message}${held.join('')}`,
  });
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
          message: `${p.kind ?? 'install'} of ${p.component} ${p.version}: step ${p.index + 1}/${p.of} ${p.step}${p.service === '*' ? '' : ` ${p.service}`} ${p.status}`,
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

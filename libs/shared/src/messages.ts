import { z } from 'zod';
import { CHANNELS } from './config.ts';
import { deviceReportSchema } from './devices.ts';
import { artifactSchema, COMPONENTS, PLATFORMS, releaseCustomSchema, semverString } from './release.ts';

/*
 * Payloads of internal events, commands and jobs. Each carries `v` (its schema version); consumers
 * parse at the edge with these schemas and the domain sees typed values only.
 */

/** A release as events and jobs refer to it: its signed summary plus the manifest target that proves it. */
export const releaseRefSchema = releaseCustomSchema.extend({
  target: z.object({ path: z.string(), length: z.number().int(), sha256: z.string() }),
});
export type ReleaseRef = z.infer<typeof releaseRefSchema>;

/**
 * What a job or a command names: a release, and nothing about it. Every consumer looks the release up
 * in its own verified TUF metadata (critical flag, channel, manifest digest); a job proves nothing.
 * Jobs of earlier versions carried the whole summary: the extra keys are dropped when parsed.
 */
export const releasePointerSchema = z.object({ component: z.enum(COMPONENTS), version: semverString });
export type ReleasePointer = z.infer<typeof releasePointerSchema>;

/** Why a check failed, as operators need to see it. See `CheckFailureKind` in the TUF client. */
export const checkFailureSchema = z.object({
  kind: z.enum(['unreachable', 'expired', 'attack', 'local', 'config', 'internal']),
  code: z.string(),
  message: z.string(),
});
export type CheckFailure = z.infer<typeof checkFailureSchema>;

export const checkRequestSchema = z.object({
  v: z.literal(1).default(1),
  /** Echoed in the response so a requester can match it. */
  request_id: z.string().max(200).optional(),
  /** Critical/forced: run now, bypassing the recent-result cache and queue order. */
  forced: z.boolean().default(false),
  source: z.string().max(200).optional(),
  /** A frontend device asking for itself: the answer says what it should run (`device_answer`). */
  device: deviceReportSchema.optional(),
});
export type CheckRequest = z.infer<typeof checkRequestSchema>;

export const componentCheckSchema = z.object({
  component: z.enum(COMPONENTS),
  installed: z.string(),
  /** The release to move to, when one is newer and can update from the installed version. */
  update: releaseRefSchema.optional(),
  /** Newest visible release that cannot update from `installed` (min_from_version), if newer than `update`. */
  blocked: z.object({ version: z.string(), min_from_version: z.string() }).optional(),
  /** Newer releases not offered because they are quarantined (rolled back) or skipped by the user. */
  held: z.array(z.lazy(() => releaseHoldSchema)).optional(),
  /** For frontends: what each registered device is offered, or what it waits for. */
  devices: z.array(z.lazy(() => deviceAnswerSchema)).optional(),
});
export type ComponentCheck = z.infer<typeof componentCheckSchema>;

export const checkResponseSchema = z.object({
  v: z.literal(1),
  request_id: z.string().optional(),
  check_id: z.string(),
  reason: z.enum(['schedule', 'request', 'startup']),
  forced: z.boolean(),
  channel: z.enum(CHANNELS),
  checked_at: z.iso.datetime(),
  duration_ms: z.number(),
  outcome: z.enum(['update_available', 'up_to_date', 'failed']),
  components: z.array(componentCheckSchema),
  error: checkFailureSchema.optional(),
  /** True when this answer is a recent result served again (non-forced request within the cache window). */
  cached: z.boolean().default(false),
  /** When each role of the trusted TUF metadata expires (the trust's health). */
  metadata_expiry: z.record(z.string().max(50), z.iso.datetime()).optional(),
  /** The answer for the device that asked (a request with `device`). */
  device_answer: z.lazy(() => deviceAnswerSchema).optional(),
});
export type CheckResponse = z.infer<typeof checkResponseSchema>;

export const updateAvailableSchema = z.object({
  v: z.literal(1),
  release: releaseRefSchema,
  installed: z.string(),
  detected_at: z.iso.datetime(),
  /** A frontend release: the registered devices it is for. */
  devices: z.array(z.string().max(128)).optional(),
});
export type UpdateAvailable = z.infer<typeof updateAvailableSchema>;

export const checkJobSchema = z.object({
  v: z.literal(1),
  reason: z.enum(['schedule', 'request', 'startup']),
  forced: z.boolean(),
  request_id: z.string().optional(),
});
export type CheckJob = z.infer<typeof checkJobSchema>;

export const downloadJobSchema = z.object({
  v: z.literal(1),
  release: releasePointerSchema,
  /** What asked for the download (a claim, for logs): the auto_download policy, a critical release, an operator. */
  reason: z.enum(['auto_download', 'critical', 'request']),
});
export type DownloadJob = z.infer<typeof downloadJobSchema>;

/** Job id that makes a download job idempotent: one job per release. */
export function downloadJobId(release: { component: string; version: string }): string {
  return `download-${release.component}-${release.version}`;
}

/** `update.download.progress`: at most a few per second per release. Totals come from signed lengths. */
export const downloadProgressSchema = z.object({
  v: z.literal(1),
  component: z.enum(COMPONENTS),
  version: z.string(),
  status: z.enum(['in_progress', 'completed', 'failed']),
  /** Bytes of this release present and verified or in flight, including ones resumed from before. */
  bytes_done: z.number().int().nonnegative(),
  /** Bytes this download must bring (blobs already cached are not counted). */
  total_bytes: z.number().int().nonnegative(),
  percent: z.number().min(0).max(100),
  rate_bytes_per_second: z.number().nonnegative(),
  eta_seconds: z.number().nonnegative().nullable(),
  message: z.string().optional(),
});
export type DownloadProgress = z.infer<typeof downloadProgressSchema>;

/** `update.download.complete`: every byte of the release is present and verified. */
export const downloadCompleteSchema = z.object({
  v: z.literal(1),
  release: releaseRefSchema,
  /** Bytes fetched over the network for this release. */
  bytes_fetched: z.number().int().nonnegative(),
  /** Bytes the release needs that were already in the cache (the delta saving). */
  bytes_reused: z.number().int().nonnegative(),
  duration_ms: z.number().nonnegative(),
  /** Whether an install job was queued, and why; otherwise the release waits for update.install.request. */
  install: z.enum(['critical', 'auto_install', 'waits']),
  /** A frontend release: the registered devices its packages are for. */
  devices: z.array(z.string().max(128)).optional(),
});
export type DownloadComplete = z.infer<typeof downloadCompleteSchema>;

export const INSTALL_REASONS = ['critical', 'auto_install', 'request'] as const;
export type InstallReason = (typeof INSTALL_REASONS)[number];

/**
 * An install job in the queue: a pointer. `reason` is a claim the installer does not believe: it
 * decides from the signed metadata and its own policy, and honours `request` (an operator's, run now,
 * perhaps a downgrade) only on a job it sealed itself (`mac`, a key on the installer's own volume).
 */
export const installJobSchema = z.object({
  v: z.literal(1),
  release: releasePointerSchema,
  reason: z.enum(INSTALL_REASONS),
  /**
   * false: only stage the release (load and verify its images; nothing stops) and announce
   * `update.restart.required`; a later request with auto_restart applies it.
   */
  auto_restart: z.boolean().optional(),
  /** An operator asked for a release older than the installed one (sealed jobs only). */
  allow_downgrade: z.boolean().optional(),
  /** An operator's install at a time they picked (sealed jobs only; the queue delays it until then). */
  scheduled_for: z.iso.datetime().optional(),
  issued_at: z.iso.datetime().optional(),
  mac: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});
export type InstallJob = z.infer<typeof installJobSchema>;

/** Job id that makes an install job idempotent: one job per release. */
export function installJobId(release: { component: string; version: string }): string {
  return `install-${release.component}-${release.version}`;
}

/** `update.restart.scheduled`: an install (and so a restart of the component) is planned for this time. */
export const restartScheduledSchema = z.object({
  v: z.literal(1),
  component: z.enum(COMPONENTS),
  version: z.string(),
  scheduled_for: z.iso.datetime(),
  /** critical and request installs happen now; auto_install ones in the update.preferred_time window. */
  reason: z.enum(INSTALL_REASONS),
  /** A new schedule, a schedule moved, or one cancelled (then nothing restarts). */
  change: z.enum(['scheduled', 'rescheduled', 'cancelled']).default('scheduled'),
  /** Why, in words (the same reason the history gives). */
  message: z.string().max(2000).optional(),
  /** Downtime to expect: the longest health wait of the services it swaps. */
  expected_downtime_seconds: z.number().nonnegative().optional(),
});
export type RestartScheduled = z.infer<typeof restartScheduledSchema>;

/** Internal command `update.install.request`: install a release that is downloaded and verified. */
export const installRequestSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  /** Which release; the newest downloaded one of the component when absent. */
  version: z.string().max(100).optional(),
  auto_restart: z.boolean().default(true),
  /** Install a release older than the installed one, or one the installed version cannot update from. */
  allow_downgrade: z.boolean().default(false),
  /** Install at this time instead of now (ISO 8601 with an offset); again for the same release moves it. */
  at: z.iso.datetime({ offset: true }).optional(),
  source: z.string().max(200).optional(),
});
export type InstallRequest = z.infer<typeof installRequestSchema>;

/** Internal command `update.rollback.request`: go back to the version before the last install. */
export const rollbackRequestSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  /**
   * The data backup to restore. Without it, the backup the undone install took is restored (when it
   * took one); another must be a backup of the version the rollback returns to.
   */
  backup_id: z.string().max(200).optional(),
  /** Only the containers go back; the data stays as the newer version left it. */
  keep_data: z.boolean().optional(),
  source: z.string().max(200).optional(),
});
export type RollbackRequest = z.infer<typeof rollbackRequestSchema>;

/** A rollback job in the install queue: run only when the installer sealed it (see the install job). */
export const rollbackJobSchema = rollbackRequestSchema.extend({
  issued_at: z.iso.datetime().optional(),
  mac: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});
export type RollbackJob = z.infer<typeof rollbackJobSchema>;

/** The answer to a command: accepted (a job was queued) or refused, with a message a person can act on. */
export const commandReplySchema = z.object({
  v: z.literal(1),
  request_id: z.string().optional(),
  accepted: z.boolean(),
  message: z.string(),
  job_id: z.string().optional(),
  code: z.string().optional(),
  /** When the queued install runs (a scheduled one: the time picked). */
  scheduled_for: z.string().optional(),
});
export type CommandReply = z.infer<typeof commandReplySchema>;

/** `update.install.prepare`, asked of components before their containers are swapped. */
export const prepareRequestSchema = z.object({
  v: z.literal(1),
  update_id: z.string(),
  component: z.enum(COMPONENTS),
  version: z.string(),
  services: z.array(z.string()),
  estimated_downtime_seconds: z.number().int().nonnegative(),
});
export type PrepareRequest = z.infer<typeof prepareRequestSchema>;

/** A component's answer: ready, or a delay it asks for (honoured up to installer.prepare_max_delay_seconds). */
export const prepareAnswerSchema = z.object({
  v: z.literal(1).default(1),
  ready: z.boolean(),
  message: z.string().max(2000).default(''),
  blocking_operations: z.array(z.string().max(200)).max(50).default([]),
  suggested_delay_seconds: z.number().int().nonnegative().default(0),
  source: z.string().max(200).optional(),
});
export type PrepareAnswer = z.infer<typeof prepareAnswerSchema>;

/** `update.restart.required`: a release is in place but takes effect only when the component restarts. */
export const restartRequiredSchema = z.object({
  v: z.literal(1),
  component: z.enum(COMPONENTS),
  version: z.string(),
  services: z.array(z.string()),
  message: z.string(),
  /** A frontend release: the registered devices that apply it when they restart. */
  devices: z.array(z.string().max(128)).optional(),
});
export type RestartRequired = z.infer<typeof restartRequiredSchema>;

/** Value of StateKeys.downloaded (`<component>@<version>`): a release whose every byte is verified. */
export const downloadedRecordSchema = z.object({
  manifest_sha256: z.string(),
  completed_at: z.string(),
  release: releaseRefSchema,
});
export type DownloadedRecord = z.infer<typeof downloadedRecordSchema>;

/** `update.install.progress`: a step of an install or a rollback started or finished. */
export const installProgressSchema = z.object({
  v: z.literal(1),
  component: z.enum(COMPONENTS),
  version: z.string().max(100),
  /** self-update: a step of the helper that swaps the update system's own services. */
  kind: z.enum(['install', 'rollback', 'self-update']).optional(),
  step: z.string().max(50),
  service: z.string().max(100),
  status: z.enum(['started', 'done']),
  index: z.number().int().nonnegative(),
  of: z.number().int().positive(),
});
export type InstallProgress = z.infer<typeof installProgressSchema>;

/** `update.install.complete`: how an install, a rollback or a refused job ended. */
export const installCompleteSchema = z.object({
  v: z.literal(1),
  /** The signed release, or (for a job refused before verification) only what it pointed at. */
  release: releasePointerSchema.extend({
    channel: z.enum(CHANNELS).optional(),
    critical: z.boolean().optional(),
  }),
  success: z.boolean(),
  outcome: z.string().max(50),
  reason: z.string().max(4000).optional(),
  code: z.string().max(100).optional(),
  backup_id: z.string().max(200).optional(),
  duration_ms: z.number().nonnegative(),
  /** The version the component runs now (after a commit, the new one; after a rollback, the old one). */
  running_version: z.string().max(100).optional(),
});
export type InstallComplete = z.infer<typeof installCompleteSchema>;

/** A release the installer does not install by itself: rolled back (quarantined) or skipped by the user. */
export const releaseHoldSchema = z.object({
  component: z.enum(COMPONENTS),
  version: z.string().max(100),
  /** quarantined, skipped: the installer's; strands_devices: the checker's (it would strand frontends). */
  kind: z.enum(['quarantined', 'skipped', 'strands_devices']),
  reason: z.string().max(4000),
  code: z.string().max(100).optional(),
  at: z.iso.datetime(),
});
export type ReleaseHold = z.infer<typeof releaseHoldSchema>;

/** A component whose automatic installs the circuit breaker paused (until an operator resumes them). */
export const pausedComponentSchema = z.object({
  component: z.enum(COMPONENTS),
  since: z.iso.datetime(),
  failures: z.number().int().nonnegative(),
  reason: z.string().max(4000),
});
export type PausedComponent = z.infer<typeof pausedComponentSchema>;

/** An install waiting in the queue for its time. */
export const scheduledInstallSchema = z.object({
  component: z.enum(COMPONENTS),
  version: z.string().max(100),
  scheduled_for: z.iso.datetime(),
  reason: z.enum(INSTALL_REASONS),
  job_id: z.string().max(200),
});
export type ScheduledInstall = z.infer<typeof scheduledInstallSchema>;

/** The installer's holds and schedule, copied to Redis (StateKeys.installerStatus) for the others to show. */
export const installerStatusSchema = z.object({
  v: z.literal(1),
  updated_at: z.iso.datetime(),
  holds: z.array(releaseHoldSchema),
  paused: z.array(pausedComponentSchema),
  schedule: z.array(scheduledInstallSchema),
  /** The data backups on the installer's volume, newest first (what a rollback may restore). */
  backups: z
    .array(
      z.object({
        id: z.string().max(200),
        component: z.string().max(50),
        from_version: z.string().max(100),
        to_version: z.string().max(100),
        created_at: z.string().max(50),
        bytes: z.number().int().nonnegative(),
      }),
    )
    .default([]),
  /** The self-update under way (or the last one): what the helper is doing, and how it ended. */
  self_update: z
    .object({
      version: z.string().max(100),
      from_version: z.string().max(100).optional(),
      phase: z.string().max(50),
      started_at: z.string().max(50),
      services: z.array(z.string().max(50)).max(10),
      step: z
        .object({ step: z.string().max(50), service: z.string().max(100), status: z.string().max(20) })
        .optional(),
      outcome: z
        .object({ result: z.string().max(50), reason: z.string().max(4000), at: z.string().max(50) })
        .optional(),
      /** The install waiting for it (a backend release that needs this updater). */
      next_install: z.object({ component: z.string().max(50), version: z.string().max(100) }).optional(),
    })
    .optional(),
});
export type InstallerStatus = z.infer<typeof installerStatusSchema>;

/** Internal command `update.download.request`: download a signed release now (the newest when no version). */
export const downloadRequestSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  version: z.string().max(100).optional(),
  source: z.string().max(200).optional(),
});
export type DownloadRequest = z.infer<typeof downloadRequestSchema>;

/** Internal command `update.install.cancel`: cancel the scheduled install of a component (or of one release). */
export const installCancelSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  version: z.string().max(100).optional(),
  source: z.string().max(200).optional(),
});
export type InstallCancel = z.infer<typeof installCancelSchema>;

/** Internal command `update.install.plan`: what an install would do (the newest downloaded when no version). */
export const installPlanRequestSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  version: z.string().max(100).optional(),
  at: z.iso.datetime({ offset: true }).optional(),
});
export type InstallPlanRequest = z.infer<typeof installPlanRequestSchema>;

/** Internal command `update.release.skip`: skip a release (skip: false takes the skip back). */
export const releaseSkipSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  version: semverString,
  skip: z.boolean().default(true),
  source: z.string().max(200).optional(),
});
export type ReleaseSkip = z.infer<typeof releaseSkipSchema>;

/** Internal command `update.install.resume`: automatic installs of a component run again. */
export const installResumeSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  component: z.enum(COMPONENTS).default('backend'),
  source: z.string().max(200).optional(),
});
export type InstallResume = z.infer<typeof installResumeSchema>;

/**
 * What a frontend device should run: a package from the home server, an update through the app store,
 * a release that waits for a newer backend, or nothing newer.
 */
export const deviceAnswerSchema = z.object({
  device_id: z.string().max(128),
  platform: z.enum(PLATFORMS),
  installed: z.string().max(100),
  answer: z.enum(['update', 'store', 'waits_for_backend', 'up_to_date']),
  release: releaseRefSchema.optional(),
  /** The package for its platform (a TUF target the home server mirrors). */
  package: artifactSchema.optional(),
  /** waits_for_backend: what the release needs. */
  needs_backend: z.string().max(200).optional(),
  reason: z.string().max(2000),
});
export type DeviceAnswer = z.infer<typeof deviceAnswerSchema>;

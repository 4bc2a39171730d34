/** The seed's bus topics: the names events and commands carry everywhere in the system. */
export const Topics = {
  checkRequest: 'update.check.request',
  checkResponse: 'update.check.response',
  available: 'update.available',
  downloadProgress: 'update.download.progress',
  downloadComplete: 'update.download.complete',
  installRequest: 'update.install.request',
  installProgress: 'update.install.progress',
  installComplete: 'update.install.complete',
  restartRequired: 'update.restart.required',
  restartScheduled: 'update.restart.scheduled',
} as const;

/** Topics beyond the seed's ten, for messages AICO defines (prepare, rollback, settings, state sync). */
export const ExtraTopics = {
  installPrepare: 'update.install.prepare',
  rollbackRequest: 'update.rollback.request',
  settings: 'update.settings',
  stateSync: 'update.state.sync',
  /** A managed container runs another image than its installed, signed release names. */
  integrityDrift: 'update.integrity.drift',
  /** Download a release on request (AICO's DownloadUpdateRequest); served by the downloader. */
  downloadRequest: 'update.download.request',
  /** Cancel a scheduled install; served by the installer. */
  installCancel: 'update.install.cancel',
  /** Dry run: the plan an install would follow, changing nothing; served by the installer. */
  installPlan: 'update.install.plan',
  /** Skip a release (or take a skip back); served by the installer. */
  releaseSkip: 'update.release.skip',
  /** Resume automatic installs of a component after the circuit breaker paused them. */
  installResume: 'update.install.resume',
} as const;
export type Topic = (typeof Topics)[keyof typeof Topics] | (typeof ExtraTopics)[keyof typeof ExtraTopics];

/**
 * Internal NATS subjects. They live under their own root so that they never collide with AICO's own
 * subjects (`update.*`, `aico.<tenant>.*`) when both share one NATS server.
 */
export const SUBJECT_ROOT = 'aicoupd';
export const Subjects = {
  /** Events, captured by the EVENTS stream: `aicoupd.evt.update.available`. */
  event: (topic: Topic) => `${SUBJECT_ROOT}.evt.${topic}` as const,
  /** Commands, request/reply over core NATS: `aicoupd.cmd.update.check.request`. */
  command: (topic: Topic) => `${SUBJECT_ROOT}.cmd.${topic}` as const,
  allEvents: `${SUBJECT_ROOT}.evt.>`,
} as const;

export const Streams = {
  /** Durable update events: a subscriber that connects later still sees them. */
  events: 'AICO_UPDATE_EVENTS',
} as const;

/** BullMQ queue names (no colons: BullMQ uses them as key separators). */
export const Queues = {
  check: 'aico-update-check',
  download: 'aico-update-download',
  install: 'aico-update-install',
} as const;

/** Redis keys of shared state, outside BullMQ's own keys. */
export const StateKeys = {
  /** Hash: component → installed semver version. Owned by the installer; seeded by config. */
  installed: 'aico-update:installed',
  /** String: JSON of the last check response, for status and de-duplicated requests. */
  lastCheck: 'aico-update:last-check',
  /** Hash: `<component>@<version>` → JSON of the verified download (manifest digest, time). */
  downloaded: 'aico-update:downloaded',
  /** List, newest first: JSON of installs, rollbacks and their reasons. Owned by the installer. */
  installHistory: 'aico-update:install-history',
  /** Hash: component → JSON of the last install (what it replaced), for a rollback on request. */
  lastInstall: 'aico-update:last-install',
  /** String: JSON of the user's settings and the effective values. Owned by the installer (a copy). */
  settings: 'aico-update:settings',
  /** String: JSON of the installer's holds (quarantined, skipped, paused) and schedule (a copy). */
  installerStatus: 'aico-update:installer-status',
  /** Lists, newest first: the checker's and the downloader's decisions (the installer's: installHistory). */
  checkerDecisions: 'aico-update:decisions:checker',
  downloaderDecisions: 'aico-update:decisions:downloader',
} as const;

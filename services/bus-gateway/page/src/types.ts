/* The shapes the page reads from the control API (see libs/shared/src/messages.ts for the full schemas). */

export interface Release {
  component: string;
  version: string;
  channel: string;
  critical: boolean;
  notes: string;
  size_bytes: number;
  released_at: string;
}

export interface Hold {
  component: string;
  version: string;
  kind: 'quarantined' | 'skipped' | 'strands_devices';
  reason: string;
  code?: string;
  at: string;
}

export interface ComponentCheck {
  component: string;
  installed: string;
  update?: Release;
  blocked?: { version: string; min_from_version: string };
  held?: Hold[];
}

export interface Scheduled {
  component: string;
  version: string;
  scheduled_for: string;
  reason: string;
  job_id: string;
}

export interface BackupSummary {
  id: string;
  component: string;
  from_version: string;
  to_version: string;
  created_at: string;
  bytes: number;
}

export interface DeviceAnswer {
  device_id: string;
  platform: string;
  installed: string;
  answer: string;
  release?: Release;
  reason: string;
}

export interface Status {
  installed: Record<string, string>;
  available: Record<string, string>;
  components: ComponentCheck[];
  last_check: {
    checked_at: string;
    outcome: string;
    error: { kind: string; code: string; message: string } | null;
    metadata_expiry?: Record<string, string>;
  } | null;
  downloaded: string[];
  holds: Hold[];
  paused: { component: string; since: string; failures: number; reason: string }[];
  schedule: Scheduled[];
  backups: BackupSummary[];
  frontends: DeviceAnswer[];
  settings: { revision: number; effective: Settings } | null;
  bus: { mode: string; connected: boolean; problem?: string | null };
}

export interface Settings {
  check_interval: number;
  auto_check: boolean;
  auto_download: boolean;
  auto_install: boolean;
  critical_install: boolean;
  allow_restart: boolean;
  notify_available: boolean;
  preferred_time: string;
  channel: string;
}

export interface Decision {
  at: string;
  service: string;
  kind: string;
  component?: string;
  version?: string;
  reason?: string;
  code?: string;
  duration_ms?: number;
  backup_id?: string;
  steps?: { step: string; service: string; ms: number }[];
}

export interface Device {
  id: string;
  platform: string;
  version: string;
  first_seen: string;
  last_seen: string;
  via?: string;
}

export interface PlanPreview {
  version: string;
  installed: string | null;
  runs_at: string;
  services: { service: string; from_image: string; to_image: string; strategy: string; why: string }[];
  backup: {
    services: { service: string; paths: string[]; estimated_bytes: number }[];
    estimated_bytes: number;
  } | null;
  disk: { free_bytes: number; needed_bytes: number; enough: boolean } | null;
  expected_downtime_seconds: number;
  downtime_basis: string;
  operator: { allowed: boolean; message?: string };
  automatic: { allowed: boolean; message?: string; at?: string };
  steps: string[];
}

/** What the event stream told the page lately. */
export interface Live {
  download?: {
    component: string;
    version: string;
    status: string;
    bytes_done: number;
    total_bytes: number;
    percent: number;
    rate_bytes_per_second: number;
    eta_seconds: number | null;
    message?: string;
  };
  install?: {
    component: string;
    version: string;
    kind?: string;
    steps: { step: string; service: string; status: string; index: number; of: number }[];
  };
  outcome?: { component: string; version: string; outcome: string; success: boolean; reason?: string };
}

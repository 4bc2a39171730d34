import { createHash } from 'node:crypto';
import { DEVICES_KEY } from './devices.ts';
import { ExtraTopics, Queues, StateKeys, Streams, Subjects, Topics } from './topics.ts';

/*
 * Who may do what on Redis and NATS: one user per service with least privilege, written down here as
 * data, once. `aico-update-secrets` (cli/init-secrets.ts) renders it into Redis's ACL file and the NATS
 * server's configuration, with a password per service it generates on the first `docker compose up`.
 *
 * - Only the gateway sends commands; only the checker serves checks, the downloader downloads on request,
 *   the installer the rest (install, schedule, rollback, settings, skips); each service publishes only
 *   its own events; nobody can delete or purge the stream.
 * - Each service touches only its own queues and state keys in Redis; what it only reads, it reads only.
 * - Anyone without a password may PING Redis (its health check) and nothing else; NATS refuses them.
 */

export const SERVICE_USERS = ['checker', 'downloader', 'installer', 'bus-gateway'] as const;
export type ServiceUser = (typeof SERVICE_USERS)[number];

const queue = (name: string) => `bull:${name}:*`;

interface RedisAccess {
  /** Key patterns read and written. */
  readWrite: string[];
  /** Key patterns only read. */
  readOnly: string[];
}

export const REDIS_ACCESS: Record<ServiceUser, RedisAccess> = {
  checker: {
    // Checks on schedule; queues downloads; seeds installed versions it finds unset (HSETNX).
    readWrite: [
      queue(Queues.check),
      queue(Queues.download),
      StateKeys.installed,
      StateKeys.lastCheck,
      StateKeys.checkerDecisions,
      'aico-update:announced',
    ],
    readOnly: [StateKeys.settings, StateKeys.installerStatus, DEVICES_KEY],
  },
  downloader: {
    // Its queue; queues installs (pointers the installer verifies); records what it downloaded.
    readWrite: [
      queue(Queues.download),
      queue(Queues.install),
      StateKeys.downloaded,
      StateKeys.downloaderDecisions,
    ],
    readOnly: [StateKeys.installed, StateKeys.settings, StateKeys.installerStatus, DEVICES_KEY],
  },
  installer: {
    // Owns the settings and its holds (on its volume; Redis gets copies for the others to show).
    readWrite: [
      queue(Queues.install),
      StateKeys.installed,
      StateKeys.installHistory,
      StateKeys.settings,
      StateKeys.installerStatus,
    ],
    readOnly: [StateKeys.downloaded, StateKeys.lastCheck, DEVICES_KEY],
  },
  'bus-gateway': {
    // Reads state for status answers; marks the events it published; records the frontend devices it hears.
    readWrite: ['aico-update:gateway:*', DEVICES_KEY],
    readOnly: [
      StateKeys.installed,
      StateKeys.lastCheck,
      StateKeys.downloaded,
      StateKeys.installHistory,
      StateKeys.checkerDecisions,
      StateKeys.downloaderDecisions,
      StateKeys.settings,
      StateKeys.installerStatus,
    ],
  },
};

/**
 * Command categories a BullMQ client needs (its Lua scripts, blocking pops, streams, transactions),
 * without @admin and @dangerous; INFO (ioredis's ready check, BullMQ's version check) and naming a
 * connection are added back.
 */
const REDIS_COMMANDS =
  '-@all +@read +@write +@keyspace +@string +@hash +@list +@set +@sortedset +@stream +@scripting ' +
  '+@transaction +@connection +@blocking +@fast +@slow -@admin -@dangerous +info +client|setname +client|getname +client|id';

/** Redis's ACL file: the default user may only PING; each service its own keys, with its password. */
export function redisAclFile(passwords: Record<ServiceUser, string>): string {
  const lines = ['user default on nopass -@all +ping +hello'];
  for (const user of SERVICE_USERS) {
    const access = REDIS_ACCESS[user];
    const hash = createHash('sha256').update(passwords[user]).digest('hex');
    const keys = [...access.readWrite.map((k) => `~${k}`), ...access.readOnly.map((k) => `%R~${k}`)];
    lines.push(`user ${user} on #${hash} resetchannels ${REDIS_COMMANDS} ${keys.join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}

interface NatsAccess {
  publish: string[];
  subscribe: string[];
  /** Answers requests (allow_responses). */
  responds: boolean;
}

const evt = (topic: string) => Subjects.event(topic as Parameters<typeof Subjects.event>[0]);
const cmd = (topic: string) => Subjects.command(topic as Parameters<typeof Subjects.command>[0]);
const stream = Streams.events;
/** What every service does with the event stream at start: look it up, create or update it. */
const STREAM_SETUP = [
  '$JS.API.INFO',
  `$JS.API.STREAM.INFO.${stream}`,
  `$JS.API.STREAM.CREATE.${stream}`,
  `$JS.API.STREAM.UPDATE.${stream}`,
];

/** The inbox prefix of a service's NATS connection: it may read only its own replies. */
export function inboxPrefix(user: string): string {
  return `_INBOX_${user.replace(/-/g, '_')}`;
}

/** The operator's commands the installer serves (and only the gateway sends). */
const INSTALLER_COMMANDS = [
  Topics.installRequest,
  ExtraTopics.rollbackRequest,
  ExtraTopics.settings,
  ExtraTopics.installCancel,
  ExtraTopics.installPlan,
  ExtraTopics.releaseSkip,
  ExtraTopics.installResume,
];

export const NATS_ACCESS: Record<ServiceUser, NatsAccess> = {
  checker: {
    publish: [...STREAM_SETUP, evt(Topics.checkResponse), evt(Topics.available)],
    subscribe: [cmd(Topics.checkRequest), evt(ExtraTopics.settings)],
    responds: true,
  },
  downloader: {
    publish: [...STREAM_SETUP, evt(Topics.downloadProgress), evt(Topics.downloadComplete)],
    subscribe: [cmd(ExtraTopics.downloadRequest), evt(ExtraTopics.settings)],
    responds: true,
  },
  installer: {
    publish: [
      ...STREAM_SETUP,
      evt(Topics.installProgress),
      evt(Topics.installComplete),
      evt(Topics.restartRequired),
      evt(Topics.restartScheduled),
      evt(ExtraTopics.integrityDrift),
      evt(ExtraTopics.settings),
      cmd(ExtraTopics.installPrepare),
    ],
    subscribe: [...INSTALLER_COMMANDS.map(cmd), evt(Topics.checkResponse)],
    responds: true,
  },
  'bus-gateway': {
    publish: [
      ...STREAM_SETUP,
      cmd(Topics.checkRequest),
      cmd(ExtraTopics.downloadRequest),
      ...INSTALLER_COMMANDS.map(cmd),
      // Its durable consumer of the stream: look up, create, pull, acknowledge. Nothing else of the API.
      `$JS.API.CONSUMER.INFO.${stream}.bus-gateway`,
      `$JS.API.CONSUMER.CREATE.${stream}.bus-gateway`,
      `$JS.API.CONSUMER.CREATE.${stream}.bus-gateway.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.bus-gateway`,
      `$JS.API.CONSUMER.MSG.NEXT.${stream}.bus-gateway`,
      `$JS.ACK.${stream}.bus-gateway.>`,
      `$JS.API.STREAM.MSG.GET.${stream}`,
    ],
    subscribe: [Subjects.allEvents, cmd(ExtraTopics.installPrepare)],
    responds: true,
  },
};

/** The NATS server's configuration: JetStream, monitoring on loopback, a user per service. */
export function natsConfig(passwords: Record<ServiceUser, string>, storeDir = '/data'): string {
  const list = (subjects: string[]) => `[${subjects.map((s) => JSON.stringify(s)).join(', ')}]`;
  const users = SERVICE_USERS.map((user) => {
    const access = NATS_ACCESS[user];
    return [
      `    { user: ${JSON.stringify(user)}, password: ${JSON.stringify(passwords[user])}, permissions: {`,
      `        publish: { allow: ${list(access.publish)} }`,
      `        subscribe: { allow: ${list([`${inboxPrefix(user)}.>`, ...access.subscribe])} }`,
      access.responds ? '        allow_responses: true' : '',
      '    } }',
    ]
      .filter(Boolean)
      .join('\n');
  });
  return [
    `# Generated by aico-update-secrets (libs/shared/src/access.ts): do not edit; it is rewritten at start.`,
    `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
    // Monitoring answers on the container's loopback only: its health check uses it.
    'http: "127.0.0.1:8222"',
    'authorization {',
    '  users: [',
    users.join(',\n'),
    '  ]',
    '}',
    '',
  ].join('\n');
}

import { TOPIC_STYLES } from '@aico-update/aico-bus';
import {
  booleanSetting,
  commaListSetting,
  httpSchema,
  logSchema,
  natsSchema,
  numberSetting,
  redisSchema,
  updatePolicySchema,
} from '@aico-update/shared';
import { z } from 'zod';

/** AICO's default broker key pair (public in AICO's source): the default, as AICO itself ships it. */
export const AICO_BROKER_PUBLIC_KEY = 'Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID';
export const AICO_BROKER_SECRET_KEY = 'D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs';

const z85Key = z.string().length(40).describe('a CURVE key in Z85 (40 characters)');

/** A comma-separated list of Z85 public keys. */
const z85KeyList = (what: string) => commaListSetting(z.string().length(40), what);

const port = (defaultPort: number, what: string) =>
  numberSetting({
    default: defaultPort,
    min: 1,
    max: 65535,
    integer: true,
    unit: 'port',
    allowed: `${what} (1 to 65535)`,
  });

export const gatewayConfigSchema = z.strictObject({
  update: updatePolicySchema,
  bus: z
    .strictObject({
      mode: z
        .enum(['zeromq', 'nats'])
        .default('zeromq')
        .describe('zeromq (AICO’s broker, the seed’s bus) or nats (AICO since 2026)'),
      topic_style: z
        .enum(TOPIC_STYLES)
        .default('dots')
        .describe(`how topics are spelled when published: ${TOPIC_STYLES.join(', ')} (all are accepted)`),
      client_id: z
        .string()
        .min(1)
        .max(100)
        .default('aico-update-gateway')
        .describe('the source name the gateway puts in every message it publishes'),
      max_message_kib: numberSetting({
        default: 1024,
        min: 1,
        max: 65_536,
        integer: true,
        unit: 'KiB',
        allowed:
          'the largest message accepted from the bus, in KiB (1 to 65536); larger ones are dropped and counted',
      }),
      requests_per_second: numberSetting({
        default: 20,
        min: 1,
        max: 10_000,
        unit: 'requests',
        allowed:
          'requests accepted per topic and second (bursts of twice that); more are answered "rate limited"',
      }),
      prepare_collect_ms: numberSetting({
        default: 2000,
        min: 100,
        max: 60_000,
        integer: true,
        unit: 'milliseconds',
        allowed: 'how long answers to a prepare request are collected from the bus (100 to 60000 ms)',
      }),
      zeromq: z
        .strictObject({
          host: z.string().min(1).default('127.0.0.1').describe('the host of AICO’s message broker'),
          pub_port: port(5555, 'the broker’s XSUB port, where publishers connect'),
          sub_port: port(5556, 'the broker’s XPUB port, where subscribers connect'),
          curve: booleanSetting(true),
          server_public_key: z85Key.default(AICO_BROKER_PUBLIC_KEY),
          bind_broker: booleanSetting(false),
          server_secret_key: z85Key
            .default(AICO_BROKER_SECRET_KEY)
            .describe(
              'with bind_broker: the broker’s CURVE secret key (Z85); AICO’s published default is never used: the gateway then makes its own key pair on first start',
            ),
          client_keys: z85KeyList(
            'with bind_broker: the CURVE public keys (Z85, comma separated) of the peers that may send requests and receive events; the gateway’s own is always allowed',
          ),
          read_only_client_keys: z85KeyList(
            'with bind_broker: public keys of peers that may only receive events (they cannot send any request)',
          ),
          allow_any_client_key: booleanSetting(false),
          bind_host: z
            .string()
            .min(1)
            .default('0.0.0.0')
            .describe('with bind_broker: the interface the broker listens on'),
          heartbeat_seconds: numberSetting({
            default: 2,
            min: 0.1,
            max: 60,
            unit: 'seconds',
            allowed:
              'seconds between the gateway’s own round trips through the broker that prove the bus works (0.1 to 60)',
          }),
        })
        .prefault({}),
      nats: z
        .strictObject({
          servers: z
            .string()
            .min(1)
            .default('nats://127.0.0.1:4222')
            .describe('AICO’s NATS server(s), comma separated (may be the same server as nats.servers)'),
          tenant: z
            .string()
            .regex(/^[a-zA-Z0-9_-]*$/)
            .default('')
            .describe(
              'AICO tenant: subjects become aico.<tenant>.update.… (empty: no prefix; AICO uses default)',
            ),
          user_id: z
            .string()
            .default('system')
            .describe('the user_id attribute AICO’s NATS contract requires'),
        })
        .prefault({}),
    })
    .prefault({}),
  devices: z
    .strictObject({
      max: numberSetting({
        default: 500,
        min: 1,
        max: 100_000,
        integer: true,
        unit: 'devices',
        allowed:
          'how many frontend devices are registered at most; a new one beyond is refused (1 to 100000)',
      }),
    })
    .prefault({}),
  /** The downloader's cache, read-only: the frontends' packages and the TUF metadata mirror are served from it. */
  packages: z
    .strictObject({
      cache_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/cache')
        .describe(
          'the downloader’s verified cache (mounted read-only): frontend packages and TUF metadata are served from it',
        ),
    })
    .prefault({}),
  control: z
    .strictObject({
      token: z
        .string()
        .refine((t) => t === '' || t.length >= 16, { message: 'at least 16 characters' })
        .default('')
        .describe(
          'the bearer token the control API requires, at least 16 characters (empty: one is generated on first start and kept in control.state_dir/control-token)',
        ),
      state_dir: z
        .string()
        .min(1)
        .default('/var/lib/aico-update/gateway')
        .describe('a writable folder on a persistent volume for the gateway’s generated secrets'),
      allowed_hosts: z
        .string()
        .default('localhost,127.0.0.1,::1')
        .transform((value) =>
          value
            .split(',')
            .map((h) =>
              h
                .trim()
                .replace(/^\[|\]$/g, '')
                .toLowerCase(),
            )
            .filter(Boolean),
        )
        .pipe(z.array(z.string().regex(/^[a-z0-9.:_-]+$/)).min(1))
        .describe(
          'the host names and addresses (no ports, comma separated) the control API may be reached as; a request naming another in Host or Origin is refused (DNS rebinding, CSRF), e.g. localhost,127.0.0.1,homeserver.lan',
        ),
      requests_per_second: numberSetting({
        default: 20,
        min: 1,
        max: 10_000,
        unit: 'requests',
        allowed: 'control API requests accepted per client address and second (bursts of twice that)',
      }),
      max_event_streams: numberSetting({
        default: 16,
        min: 1,
        max: 1000,
        integer: true,
        unit: 'connections',
        allowed: 'how many /api/v1/events streams may be open at once (1 to 1000)',
      }),
    })
    .prefault({}),
  redis: redisSchema,
  nats: natsSchema,
  http: httpSchema(8084),
  log: logSchema,
});

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;

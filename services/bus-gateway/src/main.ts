import { createHash } from 'node:crypto';
import {
  create,
  type DescMessage,
  type Envelope,
  encodeEnvelope,
  type MessageShape,
  PrepareForUpdateRequestSchema,
  PrepareForUpdateResponseSchema,
  spellTopic,
  timestampFromDate,
  UpdateStateSyncSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import {
  connectInfrastructure,
  consumeEvents,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  ExtraTopics,
  LiveSettings,
  type Logger,
  listen,
  type PrepareAnswer,
  parseJsonOrUndefined,
  prepareRequestSchema,
  type RunningHttpService,
  readLastCheck,
  runService,
  Shutdown,
  StateKeys,
  Subjects,
  Topics,
} from '@aico-update/shared';
import { brokerKeys, type KeyPair } from './broker-keys.ts';
import { type GatewayConfig, gatewayConfigSchema } from './config.ts';
import { controlApi } from './control-api.ts';
import { controlToken, type GuardOptions } from './control-guard.ts';
import { DeviceRegistry } from './devices.ts';
import {
  componentTypeOf,
  eventToBus,
  PoisonEvent,
  parseEvent,
  updateIdOf,
  updateStatusOf,
} from './domain/mapping.ts';
import { settingsToBus } from './domain/settings-mapping.ts';
import { BusRequests } from './handlers/bus-requests.ts';
import { createGatewayMetrics } from './metrics.ts';
import { operatorPage, PAGE_DIR } from './page.ts';
import { NatsBus } from './transports/nats-bus.ts';
import type { BusTransport } from './transports/transport.ts';
import { ZapHandler } from './transports/zap.ts';
import { ZeroMqBroker, ZeroMqBus } from './transports/zeromq.ts';

export type RunningGateway = RunningHttpService & {
  bus: BusTransport;
  /** The broker's CURVE public key frontends need (its own pair, or AICO's broker's). */
  brokerPublicKey: string;
};

/** Durable consumer of the internal event stream: what the bus missed while the gateway was down. */
export const GATEWAY_CONSUMER = 'bus-gateway';
const COMMAND_TIMEOUT_MS = 30_000;
/** Redis keys marking events already published on the bus; kept 8 days, far beyond any redelivery. */
const PUBLISHED_KEY_PREFIX = 'aico-update:gateway:published:';

/** The composition root: config → logger → Redis, NATS → AICO bus → requests, events, prepare, control API. */
export async function startGateway(
  config: GatewayConfig,
  options: { logger?: Logger } = {},
): Promise<RunningGateway> {
  const logger = options.logger ?? createLogger('bus-gateway', config.log.level);
  const shutdown = new Shutdown(logger);
  const registry = createMetricsRegistry('bus-gateway');
  let busConnected = () => false;
  const metrics = createGatewayMetrics(registry, () => busConnected());
  const settings = config.bus;
  try {
    const { redis, nc, readiness } = await connectInfrastructure(config, 'bus-gateway', logger, shutdown);
    const control = await controlToken(config.control.token, config.control.state_dir, logger);
    if (control.source === 'generated') {
      logger.info(
        { file: control.file },
        `generated the control API token; show it with: docker compose exec bus-gateway cat ${control.file}`,
      );
    }

    // As AICO's broker: its own key pair (never AICO's published one), and only allow-listed clients.
    let serverPublicKey = settings.zeromq.server_public_key;
    let clientKeys: KeyPair | undefined;
    const clients = { refused: new Map<string, { domain: string; at: string }>() };
    if (settings.mode === 'zeromq' && settings.zeromq.bind_broker) {
      const keys = await brokerKeys(
        { publicKey: settings.zeromq.server_public_key, secretKey: settings.zeromq.server_secret_key },
        config.control.state_dir,
      );
      serverPublicKey = keys.server.publicKey;
      clientKeys = keys.client;
      const authenticate = settings.zeromq.curve && !settings.zeromq.allow_any_client_key;
      if (authenticate) {
        const allowed = {
          full: new Set([...settings.zeromq.client_keys, keys.client.publicKey]),
          readOnly: new Set(settings.zeromq.read_only_client_keys),
        };
        const zap = new ZapHandler(
          () => allowed,
          (decision) => {
            if (decision.allowed) return;
            metrics.malformed.inc({ reason: 'client_key' });
            clients.refused.delete(decision.key);
            clients.refused.set(decision.key, { domain: decision.domain, at: new Date().toISOString() });
            if (clients.refused.size > 50)
              clients.refused.delete(clients.refused.keys().next().value as string);
          },
        );
        await zap.start();
        shutdown.add('zap', async () => zap.close());
      } else {
        logger.warn(
          'the broker accepts every CURVE client key (bus.zeromq.allow_any_client_key or curve off): anyone who reaches its ports may send requests',
        );
      }
      const broker = new ZeroMqBroker({
        curve: settings.zeromq.curve,
        secretKey: keys.server.secretKey,
        publicKey: keys.server.publicKey,
        maxMessageBytes: settings.max_message_kib * 1024,
        authenticate,
      });
      await broker.bind(settings.zeromq.bind_host, settings.zeromq.pub_port, settings.zeromq.sub_port);
      shutdown.add('broker', () => broker.close());
      logger.info(
        {
          pub_port: settings.zeromq.pub_port,
          sub_port: settings.zeromq.sub_port,
          public_key: keys.server.publicKey,
          public_key_file: keys.publicKeyFile,
          own_key_pair: keys.generated,
        },
        `serving as the AICO message broker; frontends use its public key ${keys.server.publicKey}`,
      );
    }
    const bus: BusTransport =
      settings.mode === 'zeromq'
        ? new ZeroMqBus({
            // Being the broker, it reaches itself; otherwise AICO's broker.
            host: settings.zeromq.bind_broker ? '127.0.0.1' : settings.zeromq.host,
            pubPort: settings.zeromq.pub_port,
            subPort: settings.zeromq.sub_port,
            curve: settings.zeromq.curve,
            serverPublicKey,
            clientKeys,
            topicStyle: settings.topic_style,
            heartbeatMs: settings.zeromq.heartbeat_seconds * 1000,
            maxMessageBytes: settings.max_message_kib * 1024,
            logger,
          })
        : new NatsBus({
            servers: settings.nats.servers.split(',').map((s) => s.trim()),
            tenant: settings.nats.tenant || undefined,
            name: settings.client_id,
            logger,
          });

    busConnected = () => bus.connected();

    /** Every message the gateway publishes; AICO's NATS contract also wants its request attributes. */
    const encode = <Desc extends DescMessage>(
      topic: string,
      schema: Desc,
      message: MessageShape<Desc>,
      attributes: Record<string, string>,
      messageId?: string,
    ): Uint8Array => {
      const id = messageId ?? crypto.randomUUID();
      const natsAttributes: Record<string, string> =
        settings.mode === 'nats'
          ? {
              tenant_id: settings.nats.tenant || 'default',
              user_id: settings.nats.user_id,
              request_id: attributes.correlation_id || id,
              idempotency_key: id,
              reply_to: '',
            }
          : {};
      return encodeEnvelope(topic, schema, message, {
        source: settings.client_id,
        attributes: { ...natsAttributes, correlation_id: id, ...attributes },
        messageId: id,
      });
    };

    // The prepare signal, installer → AICO components: each answer on the bus is one answer to the installer.
    const prepareWaiters = new Map<string, (envelope: Envelope) => void>();
    const prepareSubscription = nc.subscribe(Subjects.command(ExtraTopics.installPrepare), {
      callback: (_error, msg) => {
        const parsed = prepareRequestSchema.safeParse(parseJsonOrUndefined(msg.string()));
        if (!parsed.success || !msg.reply) return;
        const correlationId = crypto.randomUUID();
        prepareWaiters.set(correlationId, (envelope) => {
          try {
            const answer = unpackPayload(envelope, PrepareForUpdateResponseSchema);
            const reply: PrepareAnswer = {
              v: 1,
              ready: answer.ready,
              message: answer.message,
              blocking_operations: answer.blockingOperations,
              suggested_delay_seconds: answer.suggestedDelaySeconds,
              source: envelope.source,
            };
            msg.respond(JSON.stringify(reply));
          } catch (error) {
            metrics.malformed.inc({ reason: 'payload_type' });
            logger.warn({ err: error }, 'ignored a malformed prepare answer');
          }
        });
        setTimeout(() => prepareWaiters.delete(correlationId), settings.prepare_collect_ms).unref();
        const request = create(PrepareForUpdateRequestSchema, {
          updateId: updateIdOf(parsed.data),
          componentType: componentTypeOf(parsed.data.component),
          estimatedDowntimeSeconds: parsed.data.estimated_downtime_seconds,
        });
        void bus
          .publish(
            ExtraTopics.installPrepare,
            encode(ExtraTopics.installPrepare, PrepareForUpdateRequestSchema, request, {
              correlation_id: correlationId,
              reply_to:
                settings.mode === 'nats'
                  ? 'update.install.prepare.response'
                  : spellTopic('update.install.prepare.response', settings.topic_style),
            }),
          )
          .then(
            () => metrics.messagesOut.inc({ topic: ExtraTopics.installPrepare }),
            // The bus may be down: the installer waits its prepare timeout and goes ahead.
            (error: Error) => logger.warn({ err: error }, `could not ask AICO to prepare: ${error.message}`),
          );
      },
    });
    shutdown.add('prepare bridge', async () => prepareSubscription.unsubscribe());

    const progress: Record<string, unknown> = {};
    // The settings in force (the installer keeps them), for answers when the installer cannot be asked.
    const userSettings = new LiveSettings(config.update, logger);
    shutdown.add('settings', await userSettings.follow(redis, nc));
    const devices = new DeviceRegistry(redis, { max: config.devices.max, metrics });
    await devices.refreshGauge();
    const requests = new BusRequests({
      devices,
      via: settings.mode,
      nc,
      bus,
      metrics,
      logger,
      clientId: settings.client_id,
      maxMessageBytes: settings.max_message_kib * 1024,
      requestsPerSecond: settings.requests_per_second,
      commandTimeoutMs: COMMAND_TIMEOUT_MS,
      encode,
      settings: () => settingsToBus(userSettings.policy),
      stateSync: async (component) => {
        const [installed, check, downloaded] = await Promise.all([
          redis.hget(StateKeys.installed, component),
          readLastCheck(redis),
          redis.hkeys(StateKeys.downloaded),
        ]);
        const update = check?.components.find((c) => c.component === component)?.update;
        const install = progress[Topics.installProgress] as { component?: string; step?: string } | undefined;
        return create(UpdateStateSyncSchema, {
          deviceId: settings.client_id,
          componentType: componentTypeOf(component),
          currentVersion: { version: installed ?? '' },
          updateId: update ? updateIdOf(update) : '',
          updateStatus: updateStatusOf({
            checkOutcome: check?.outcome,
            available: Boolean(update),
            downloaded: Boolean(update && downloaded.includes(`${component}@${update.version}`)),
            installing: install?.component === component && install.step !== 'commit',
          }),
          ...(check ? { lastCheck: timestampFromDate(new Date(check.checked_at)) } : {}),
        });
      },
      onPrepareAnswer: (envelope) => prepareWaiters.get(envelope.attributes.correlation_id ?? '')?.(envelope),
    });
    await bus.start((message) => requests.accept(message));
    shutdown.add('bus', () => bus.close());

    // Internal events → the bus, from the durable consumer: nothing is lost while the bus is down.
    const stopEvents = await consumeEvents(
      nc,
      GATEWAY_CONSUMER,
      async (topic, raw, eventId) => {
        const payload = parseEvent(topic, raw);
        if (topic === Topics.downloadProgress || topic === Topics.installProgress) progress[topic] = payload;
        if (topic === Topics.installComplete) delete progress[Topics.installProgress];
        const mapped = eventToBus(topic, payload);
        if (!mapped) return;
        // A redelivery (its acknowledgement was lost) that is already on the bus is not published again.
        const published = `${PUBLISHED_KEY_PREFIX}${eventId}`;
        if (await redis.exists(published)) return;
        if (!bus.connected()) throw new Error(`the AICO bus is not connected: ${bus.problem()}`);
        await bus.publish(topic, encode(topic, mapped.schema, mapped.message, {}, eventMessageId(eventId)));
        await redis.set(published, '1', 'EX', 8 * 24 * 3600);
        metrics.messagesOut.inc({ topic });
      },
      logger,
      {
        isPoison: (error) => error instanceof PoisonEvent,
        onPoison: (_subject, reason) => metrics.malformed.inc({ reason: `event_${reason}` }),
      },
    );
    shutdown.add('event consumer', stopEvents);

    let wasConnected: boolean | undefined;
    const watch = setInterval(() => {
      const connected = bus.connected();
      if (connected !== wasConnected && (wasConnected !== undefined || !connected)) {
        if (connected) logger.info(`AICO bus (${bus.kind}) connected`);
        else logger.error(`AICO bus (${bus.kind}) not connected: ${bus.problem()}`);
      }
      wasConnected = connected;
    }, 1000);
    shutdown.add('bus watch', async () => clearInterval(watch));

    const guard = {
      token: control.token,
      allowedHosts: config.control.allowed_hosts,
      requestsPerSecond: config.control.requests_per_second,
      onRefused: (reason: Parameters<NonNullable<GuardOptions['onRefused']>>[0]) =>
        metrics.controlRefused.inc({ reason }),
    };
    const app = createServiceApp({
      registry,
      logger,
      readiness: [
        ...readiness,
        {
          name: 'aico-bus',
          check: async () => {
            const problem = bus.problem();
            if (problem) throw new Error(problem);
          },
        },
      ],
      routes: (app) => {
        controlApi({
          redis,
          nc,
          guard,
          maxEventStreams: config.control.max_event_streams,
          devices,
          packagesDir: config.packages.cache_dir,
          commandTimeoutMs: COMMAND_TIMEOUT_MS,
          progress: () => ({ ...progress }),
          bus: () => ({
            mode: bus.kind,
            connected: bus.connected(),
            problem: bus.problem(),
            ...(settings.mode === 'zeromq' ? { broker_public_key: serverPublicKey } : {}),
            // Keys the broker refused lately: how an operator finds a frontend's key to allow it.
            refused_client_keys: [...clients.refused].map(([key, seen]) => ({ key, ...seen })).reverse(),
          }),
        })(app);
        operatorPage({ dir: PAGE_DIR, guard })(app);
      },
    });
    const http = await listen(app, config.http.host, config.http.port);
    shutdown.add('http', () => http.close());
    logger.info({ port: http.port, mode: settings.mode }, 'bus gateway started');
    return { port: http.port, bus, brokerPublicKey: serverPublicKey, stop: () => shutdown.stop() };
  } catch (error) {
    await shutdown.stop();
    throw error;
  }
}

/** A stable UUID-shaped id for a stored event: a redelivery carries the same id. */
function eventMessageId(eventId: string): string {
  const hex = createHash('sha256').update(`aico-update-event:${eventId}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

if (import.meta.main) {
  await runService('bus-gateway', gatewayConfigSchema, (config, logger) => startGateway(config, { logger }));
}

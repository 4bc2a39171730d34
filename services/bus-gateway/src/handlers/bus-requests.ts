import {
  BusDecodeError,
  canonicalTopic,
  type DescMessage,
  decodeEnvelope,
  type Envelope,
  type MessageShape,
  type UpdateSettingsSchema,
  type UpdateStateSyncSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { AppError, ExtraTopics, type Logger, type NatsConnection, Topics } from '@aico-update/shared';
import type { DeviceRegistry } from '../devices.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { BusTransport, InboundMessage } from '../transports/transport.ts';
import { busRoutes, type Route } from './bus-routes.ts';

/*
 * Requests from AICO's bus. Every message is checked in this order, and anything wrong is counted by
 * reason, logged, and answered with an error when the sender said where to answer; nothing a peer sends
 * can crash or block the gateway: two frames, a size bound, an AicoMessage, a known topic, a correlation
 * id, the payload type the topic carries, no duplicate, within the rate, within the in-flight bound.
 */

/** Topics the gateway publishes (or another AICO component answers): seen on the bus, not requests. */
const OUTBOUND = new Set<string>([
  Topics.checkResponse,
  Topics.available,
  Topics.downloadProgress,
  Topics.downloadComplete,
  Topics.installProgress,
  Topics.installComplete,
  Topics.restartRequired,
  Topics.restartScheduled,
  ExtraTopics.installPrepare,
  'update.install.response',
  'update.download.response',
  'update.rollback.response',
  'update.settings.response',
  'update.state.sync.response',
]);

export interface BusRequestDeps {
  nc: NatsConnection;
  bus: BusTransport;
  metrics: GatewayMetrics;
  logger: Logger;
  clientId: string;
  maxMessageBytes: number;
  requestsPerSecond: number;
  commandTimeoutMs: number;
  /** Builds the envelope of an answer (the transport's required attributes included). */
  encode: <Desc extends DescMessage>(
    topic: string,
    schema: Desc,
    message: MessageShape<Desc>,
    attributes: Record<string, string>,
  ) => Uint8Array;
  /** The current settings and state, for `update.settings` and `update.state.sync`. */
  settings: () => MessageShape<typeof UpdateSettingsSchema>;
  stateSync: (component: string) => Promise<MessageShape<typeof UpdateStateSyncSchema>>;
  /** The frontend devices heard on the bus, and over which transport. */
  devices: DeviceRegistry;
  via: 'zeromq' | 'nats';
  /** Answers to the gateway's own prepare requests, by correlation id. */
  onPrepareAnswer: (envelope: Envelope) => void;
}

const MAX_IN_FLIGHT = 64;

/** Where an answer may go when a requester names it: an update.*.response topic in any spelling, or a NATS inbox. */
export function isResponseTopic(replyTo: string): boolean {
  if (replyTo.length > 200) return false;
  if (/^_INBOX\.[A-Za-z0-9_.-]+$/.test(replyTo)) return true;
  const canonical = canonicalTopic(replyTo.replace(/^aico\.[a-zA-Z0-9_-]+\./, ''));
  return Boolean(canonical?.startsWith('update.') && canonical.endsWith('.response'));
}

const REMEMBERED_CORRELATION_IDS = 4096;

export class BusRequests {
  readonly #deps: BusRequestDeps;
  readonly #routes: Record<string, Route>;
  readonly #answered = new Set<string>();
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  #inFlight = 0;

  constructor(deps: BusRequestDeps) {
    this.#deps = deps;
    this.#routes = busRoutes(deps);
  }

  /** Takes one message off the bus; never throws, never waits for the answer. */
  accept(message: InboundMessage): void {
    const { metrics, logger } = this.#deps;
    const malformed = (reason: string, detail: string, answer?: { route: Route; envelope: Envelope }) => {
      metrics.malformed.inc({ reason });
      logger.warn({ reason, topic: message.rawTopic.slice(0, 200) }, `dropped a bus message: ${detail}`);
      if (answer)
        this.#answer(answer.route, answer.envelope, message, answer.route.failure(detail), reason, true, {
          errorMessage: detail,
        });
    };
    if (message.frames !== 2) {
      malformed('frames', `${message.frames} frame(s), AICO messages have 2`);
      return;
    }
    if (message.data.byteLength > this.#deps.maxMessageBytes) {
      malformed(
        'too_large',
        `${message.data.byteLength} bytes, more than bus.max_message_kib (${this.#deps.maxMessageBytes / 1024} KiB)`,
      );
      return;
    }
    let envelope: Envelope;
    try {
      envelope = decodeEnvelope(message.data);
    } catch (error) {
      malformed(error instanceof BusDecodeError ? error.reason : 'protobuf', (error as Error).message);
      return;
    }
    if (envelope.source === this.#deps.clientId) return; // our own message, back through the broker
    const topic = message.topic;
    if (!topic) {
      malformed('unknown_topic', `"${message.rawTopic.slice(0, 100)}" is not a topic`);
      return;
    }
    metrics.messagesIn.inc({ topic });
    if (topic === 'update.install.prepare.response') {
      this.#deps.onPrepareAnswer(envelope);
      return;
    }
    const target = this.#routes[topic];
    if (!target) {
      if (OUTBOUND.has(topic)) return;
      malformed('unknown_topic', `no update-system topic "${topic}"`);
      return;
    }
    const correlationId = envelope.attributes.correlation_id;
    if (!correlationId) {
      malformed('no_correlation_id', `a ${topic} request without attributes.correlation_id`, {
        route: target,
        envelope,
      });
      return;
    }
    let payload: MessageShape<DescMessage>;
    try {
      payload = unpackPayload(envelope, target.request);
    } catch (error) {
      const reason = error instanceof BusDecodeError ? error.reason : 'payload_type';
      malformed(reason, (error as Error).message, { route: target, envelope });
      return;
    }
    const key = `${envelope.source}\u0000${correlationId}`;
    if (this.#answered.has(key)) {
      metrics.malformed.inc({ reason: 'duplicate' });
      return; // AICO's contract: responders drop correlation ids they already answered
    }
    this.#remember(key);
    if (!this.#withinRate(topic)) {
      metrics.malformed.inc({ reason: 'rate_limited' });
      this.#answer(
        target,
        envelope,
        message,
        target.failure(`rate limited: more than ${this.#deps.requestsPerSecond} ${topic} per second`),
        'RATE_LIMITED',
      );
      return;
    }
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      metrics.malformed.inc({ reason: 'busy' });
      this.#answer(
        target,
        envelope,
        message,
        target.failure('busy: too many requests in flight, try again'),
        'BUSY',
      );
      return;
    }
    this.#inFlight += 1;
    const started = performance.now();
    void target
      .handle(payload, { envelope, correlationId })
      .then(
        (answer) =>
          this.#answer(target, envelope, message, answer.response, answer.refused?.code, false, {
            ...(answer.refused ? { errorMessage: answer.refused.message } : {}),
            ...(answer.attributes ? { attributes: answer.attributes } : {}),
          }),
        (error: unknown) => {
          const code = error instanceof AppError ? error.code : 'FAILED';
          logger.error({ err: error, topic }, `${topic} failed`);
          const reason = (error as Error).message;
          this.#answer(target, envelope, message, target.failure(reason), code, false, {
            errorMessage: reason,
          });
          return;
        },
      )
      .finally(() => {
        this.#inFlight -= 1;
        metrics.requestDuration.observe({ topic }, (performance.now() - started) / 1000);
      });
  }

  /**
   * Answers through the NATS inbox, else on `reply_to`, else on the topic's response topic. A malformed
   * request (`onlyToAsker`) is only answered where the requester said where to answer.
   */
  #answer(
    route: Route,
    envelope: Envelope,
    message: InboundMessage,
    response: MessageShape<DescMessage>,
    errorCode?: string,
    onlyToAsker = false,
    extra: { errorMessage?: string; attributes?: Record<string, string> } = {},
  ): void {
    // reply_to is a peer's word: honoured only for a response topic (or a NATS inbox), never verbatim
    // onto another topic (a peer could otherwise make the gateway publish on update.install.request).
    const asked = envelope.attributes.reply_to;
    const replyTo = asked && isResponseTopic(asked) ? asked : undefined;
    if (asked && !replyTo) this.#deps.metrics.malformed.inc({ reason: 'reply_to' });
    if (onlyToAsker && !message.respond && !replyTo) return;
    const attributes: Record<string, string> = {
      ...extra.attributes,
      correlation_id: envelope.attributes.correlation_id ?? '',
      ...(errorCode ? { error_code: errorCode } : {}),
      ...(errorCode && extra.errorMessage ? { error_message: extra.errorMessage.slice(0, 2000) } : {}),
    };
    const bytes = this.#deps.encode(route.responseTopic, route.response, response, attributes);
    const sent = message.respond
      ? Promise.resolve(message.respond(bytes))
      : replyTo
        ? this.#deps.bus.publishVerbatim(replyTo, bytes)
        : this.#deps.bus.publish(route.responseTopic, bytes);
    void sent.then(
      () => this.#deps.metrics.messagesOut.inc({ topic: route.responseTopic }),
      (error: unknown) => this.#deps.logger.error({ err: error }, `could not answer ${route.responseTopic}`),
    );
  }

  #remember(key: string): void {
    this.#answered.add(key);
    if (this.#answered.size > REMEMBERED_CORRELATION_IDS) {
      const oldest = this.#answered.values().next().value as string;
      this.#answered.delete(oldest);
    }
  }

  /** A token bucket per topic: `requestsPerSecond`, bursts of twice that. */
  #withinRate(topic: string): boolean {
    const rate = this.#deps.requestsPerSecond;
    const now = performance.now();
    const bucket = this.#buckets.get(topic) ?? { tokens: rate * 2, at: now };
    bucket.tokens = Math.min(rate * 2, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    this.#buckets.set(topic, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

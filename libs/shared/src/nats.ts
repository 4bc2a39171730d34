import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  StorageType,
} from '@nats-io/jetstream';
import { connect, type NatsConnection, nanos } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { inboxPrefix } from './access.ts';
import { AppError } from './errors.ts';
import { Streams, SUBJECT_ROOT, Subjects, type Topic } from './topics.ts';

export type { NatsConnection } from '@nats-io/transport-node';

/** Connects with endless reconnects: a NATS restart is an interruption, not a reason to exit. */
export async function connectNats(
  servers: string,
  name: string,
  logger: Logger,
  credentials: { user?: string; pass?: string } = {},
): Promise<NatsConnection> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: servers.split(',').map((s) => s.trim()),
      name,
      // A user reads only its own replies: its inboxes have a prefix of their own (see access.ts).
      ...(credentials.user
        ? { user: credentials.user, pass: credentials.pass ?? '', inboxPrefix: inboxPrefix(credentials.user) }
        : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      // No stack captured per request (two Error objects each): measured as ~6 % of the gateway's
      // allocations per bus request. Our errors name the subject and the operation themselves.
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new AppError(
      'NATS_UNREACHABLE',
      `cannot connect to NATS at ${servers} (${(error as Error).message}); check nats.servers and that NATS is running`,
      { cause: error },
    );
  }
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error') {
        logger.warn({ nats: status.type }, `NATS ${status.type}`);
      }
    }
  })();
  return nc;
}

/**
 * Creates or updates the durable event stream. Every event is kept there (the last 100 per topic, at
 * most 30 days) so a subscriber that connects later still sees `update.available` and friends.
 */
export async function ensureEventStream(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const config = {
    name: Streams.events,
    subjects: [Subjects.allEvents],
    storage: StorageType.File,
    max_age: nanos(30 * 24 * 3600 * 1000),
    max_msgs_per_subject: 100,
    duplicate_window: nanos(10 * 60 * 1000),
  };
  try {
    await jsm.streams.info(Streams.events);
    await jsm.streams.update(Streams.events, config);
  } catch {
    await jsm.streams.add(config);
  }
}

/** Where services send events; the domain depends on this, not on NATS. */
export interface EventSink {
  publish(topic: Topic, payload: unknown, dedupId?: string): Promise<void>;
}

/** Publishes events to the durable stream. `dedupId` makes a re-publish after a retry a no-op. */
export class EventPublisher implements EventSink {
  readonly #js;

  constructor(nc: NatsConnection) {
    this.#js = jetstream(nc);
  }

  async publish(topic: Topic, payload: unknown, dedupId?: string): Promise<void> {
    await this.#js.publish(Subjects.event(topic), JSON.stringify(payload), dedupId ? { msgID: dedupId } : {});
  }
}

/**
 * The newest durable event on a topic, or undefined when there is none: how a subscriber that connects
 * late learns the current state (a direct get, which nats-server 2.9 supports).
 */
export async function lastEvent<T>(nc: NatsConnection, topic: Topic): Promise<T | undefined> {
  const jsm = await jetstreamManager(nc);
  try {
    const message = await jsm.streams.getMessage(Streams.events, { last_by_subj: Subjects.event(topic) });
    return message?.json<T>();
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.NoMessageFound)
      return undefined;
    throw error;
  }
}

/**
 * Delivers every durable event to `handle`, through a durable JetStream consumer: what arrives while the
 * consumer's service is down is delivered when it is back, and an event is acknowledged only after
 * `handle` succeeded (a failure is retried after a second). A new consumer starts with new events.
 * Delivery is at least once: an acknowledgement lost in a NATS restart redelivers the event with the
 * same `eventId`.
 * Returns a stop function.
 */
export async function consumeEvents(
  nc: NatsConnection,
  durable: string,
  handle: (topic: string, payload: unknown, eventId: string) => Promise<void>,
  logger: Logger,
  options: {
    /** A failure that retrying cannot mend (the event does not fit its schema): dropped, not retried. */
    isPoison?: (error: unknown) => boolean;
    onPoison?: (subject: string, reason: string) => void;
  } = {},
): Promise<() => Promise<void>> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.consumers.info(Streams.events, durable);
  } catch {
    await jsm.consumers.add(Streams.events, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      filter_subject: Subjects.allEvents,
      ack_wait: nanos(30_000),
    });
  }
  const consumer = await jetstream(nc).consumers.get(Streams.events, durable);
  const messages = await consumer.consume({ max_messages: 100 });
  const prefix = `${SUBJECT_ROOT}.evt.`;
  const done = (async () => {
    for await (const message of messages) {
      let payload: unknown;
      try {
        payload = message.json();
      } catch {
        // Not JSON: no delivery will ever change that. Terminated, so it is not redelivered forever.
        options.onPoison?.(message.subject, 'not_json');
        logger.warn({ subject: message.subject }, 'dropped an event that is not JSON');
        message.term();
        continue;
      }
      try {
        // Unique per stored event, also across a re-created stream (sequence numbers restart there).
        const eventId = `${message.seq}-${message.info.timestampNanos}`;
        await handle(message.subject.slice(prefix.length), payload, eventId);
        message.ack();
      } catch (error) {
        if (options.isPoison?.(error)) {
          options.onPoison?.(message.subject, 'invalid');
          logger.warn(
            { err: error, subject: message.subject },
            `dropped an event: ${(error as Error).message}`,
          );
          message.term();
          continue;
        }
        // Transient (the bus is down): retried every second for as long as it takes; nothing is lost.
        logger.error({ err: error, subject: message.subject }, 'event handling failed; retrying');
        message.nak(1000);
      }
    }
  })();
  return async () => {
    await messages.close();
    await done;
  };
}

import { randomBytes } from 'node:crypto';
import { canonicalTopic, spellTopic, type TopicStyle } from '@aico-update/aico-bus';
import type { Logger } from '@aico-update/shared';
import { curveKeyPair, Publisher, Subscriber, XPublisher, XSubscriber, Proxy as ZmqProxy } from 'zeromq';
import type { BusTransport, InboundMessage } from './transport.ts';
import { ZAP_DOMAINS } from './zap.ts';

/*
 * The ZeroMQ generation: a PUB connected to the broker's XSUB (5555) and a SUB connected to its XPUB
 * (5556), CurveZMQ with the broker's public key and a fresh key pair per start. A wrong server key
 * fails silently in ZeroMQ (no handshake, messages vanish), so the gateway proves the bus works with its
 * own heartbeat: a message on a topic only it subscribes to, which must come back through the broker.
 */

/**
 * A ZeroMQ socket takes one send at a time (zeromq.js rejects a second one with EBUSY, which lost
 * answers under load): sends wait their turn here, in order.
 */
export class SerialSender {
  readonly #socket: { send(frames: (string | Uint8Array)[]): Promise<void> };
  #last: Promise<unknown> = Promise.resolve();

  constructor(socket: { send(frames: (string | Uint8Array)[]): Promise<void> }) {
    this.#socket = socket;
  }

  send(frames: (string | Uint8Array)[]): Promise<void> {
    const sent = this.#last.then(() => this.#socket.send(frames));
    this.#last = sent.catch(() => undefined);
    return sent;
  }
}

/*
 * Size limits are set on the sockets (ZMQ_MAXMSGSIZE): a frame larger than bus.max_message_kib makes
 * ZeroMQ drop that peer's connection as soon as it reads the frame's length, before buffering it, so a
 * huge message costs no memory. The check in the request handler remains for NATS.
 */

export interface ZeroMqOptions {
  host: string;
  pubPort: number;
  subPort: number;
  curve: boolean;
  serverPublicKey: string;
  topicStyle: TopicStyle;
  heartbeatMs: number;
  /** The largest frame accepted (bus.max_message_kib). */
  maxMessageBytes: number;
  /** This client's key pair (a stable one for its own broker's allow-list); fresh per start otherwise. */
  clientKeys?: { publicKey: string; secretKey: string } | undefined;
  logger: Logger;
}

export class ZeroMqBus implements BusTransport {
  readonly kind = 'zeromq';
  readonly #options: ZeroMqOptions;
  readonly #heartbeatTopic = `update.gateway.heartbeat.${randomBytes(6).toString('hex')}`;
  #pub: Publisher | undefined;
  #sub: Subscriber | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastHeartbeat = 0;
  #sender: SerialSender | undefined;
  readonly #started = Date.now();

  constructor(options: ZeroMqOptions) {
    this.#options = options;
  }

  async start(onMessage: (message: InboundMessage) => void): Promise<void> {
    const { host, pubPort, subPort } = this.#options;
    const keys = this.#options.clientKeys ?? curveKeyPair();
    const curve = this.#options.curve
      ? {
          curveServerKey: this.#options.serverPublicKey,
          curvePublicKey: keys.publicKey,
          curveSecretKey: keys.secretKey,
        }
      : {};
    this.#pub = new Publisher({ linger: 0, sendHighWaterMark: 10_000, ...curve });
    this.#sub = new Subscriber({
      linger: 0,
      receiveHighWaterMark: 10_000,
      maxMessageSize: this.#options.maxMessageBytes,
      ...curve,
    });
    this.#sender = new SerialSender(this.#pub);
    this.#pub.connect(`tcp://${host}:${pubPort}`);
    this.#sub.connect(`tcp://${host}:${subPort}`);
    // Prefix filters: every spelling of the update topics (dots, and slashes with or without /v1).
    this.#sub.subscribe('update.');
    this.#sub.subscribe('update/');
    void this.#receive(this.#sub, onMessage);
    const beat = () => void this.#send([this.#heartbeatTopic, '']).catch(() => undefined);
    beat();
    this.#timer = setInterval(beat, this.#options.heartbeatMs);
  }

  async #receive(sub: Subscriber, onMessage: (message: InboundMessage) => void): Promise<void> {
    try {
      for await (const frames of sub) {
        const rawTopic = frames[0]?.toString('utf8') ?? '';
        if (rawTopic === this.#heartbeatTopic) {
          this.#lastHeartbeat = Date.now();
          continue;
        }
        // Other gateways' heartbeats are not messages.
        if (rawTopic.startsWith('update.gateway.heartbeat.')) continue;
        onMessage({
          topic: canonicalTopic(rawTopic),
          rawTopic,
          frames: frames.length,
          data: frames[1] ?? new Uint8Array(),
        });
      }
    } catch (error) {
      if (!sub.closed) this.#options.logger.error({ err: error }, 'ZeroMQ receive loop failed');
    }
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    await this.publishVerbatim(spellTopic(topic, this.#options.topicStyle), data);
  }

  async publishVerbatim(topic: string, data: Uint8Array): Promise<void> {
    await this.#send([topic, data]);
  }

  #send(frames: (string | Uint8Array)[]): Promise<void> {
    if (!this.#sender) return Promise.reject(new Error('the ZeroMQ bus is not started'));
    return this.#sender.send(frames);
  }

  connected(): boolean {
    return Date.now() - this.#lastHeartbeat < 3 * this.#options.heartbeatMs;
  }

  problem(): string | undefined {
    if (this.connected()) return undefined;
    const { host, pubPort, subPort, curve } = this.#options;
    const since = this.#lastHeartbeat
      ? `since ${new Date(this.#lastHeartbeat).toISOString()}`
      : `in ${Math.round((Date.now() - this.#started) / 1000)} s`;
    return `no message came back through the AICO broker at ${host}:${pubPort}/${subPort} ${since}: the broker is not running or not reachable${curve ? ', or its CURVE public key is not bus.zeromq.server_public_key' : ''}`;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#pub?.close();
    this.#sub?.close();
  }
}

/**
 * The broker itself, for installations without an AICO backend broker: XSUB on the publishers' port,
 * XPUB on the subscribers' port, CURVE server with the configured key pair, frames forwarded unchanged.
 */
export class ZeroMqBroker {
  readonly #frontend: XSubscriber;
  readonly #backend: XPublisher;
  readonly #proxy: ZmqProxy;

  constructor(options: {
    curve: boolean;
    secretKey: string;
    publicKey: string;
    maxMessageBytes: number;
    /** Ask the ZAP handler (zap.ts) about every client key, per socket. */
    authenticate?: boolean;
  }) {
    const curve = options.curve
      ? { curveServer: true, curveSecretKey: options.secretKey, curvePublicKey: options.publicKey }
      : {};
    const zap = (domain: string) => (options.authenticate ? { zapDomain: domain } : {});
    // Publishers' frames are bounded here, where they enter: see the note on size limits above.
    this.#frontend = new XSubscriber({
      linger: 0,
      maxMessageSize: options.maxMessageBytes,
      ...curve,
      ...zap(ZAP_DOMAINS.publish),
    });
    this.#backend = new XPublisher({
      linger: 0,
      sendHighWaterMark: 10_000,
      ...curve,
      ...zap(ZAP_DOMAINS.subscribe),
    });
    this.#proxy = new ZmqProxy(this.#frontend, this.#backend);
  }

  async bind(host: string, pubPort: number, subPort: number): Promise<void> {
    await this.#frontend.bind(`tcp://${host}:${pubPort}`);
    await this.#backend.bind(`tcp://${host}:${subPort}`);
    void this.#proxy.run().catch(() => undefined);
  }

  async close(): Promise<void> {
    try {
      this.#proxy.terminate();
    } catch {
      // not running
    }
    this.#frontend.close();
    this.#backend.close();
  }
}

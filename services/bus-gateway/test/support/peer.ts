import { randomUUID } from 'node:crypto';
import {
  type DescMessage,
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  type MessageShape,
  unpackPayload,
} from '@aico-update/aico-bus';
import { curveKeyPair, Publisher, Subscriber } from 'zeromq';
import { SerialSender } from '../../src/transports/zeromq.ts';

/**
 * An AICO frontend on the ZeroMQ bus, as AICO's client does it: PUB to the broker's 5555, SUB to 5556,
 * CURVE with the broker's public key and a fresh key pair, two frames per message.
 */
export class ZmqPeer {
  readonly source = `frontend-${randomUUID().slice(0, 8)}`;
  readonly received: { topic: string; frames: Buffer[]; envelope?: Envelope }[] = [];
  readonly #pub: Publisher;
  readonly #sub: Subscriber;
  readonly #sender: SerialSender;

  constructor(
    host: string,
    pubPort: number,
    subPort: number,
    serverKey: string | undefined,
    /** Its key pair (one the broker's allow-list names); a fresh one otherwise, as AICO's client makes. */
    keys: { publicKey: string; secretKey: string } = curveKeyPair(),
  ) {
    const curve = serverKey
      ? { curveServerKey: serverKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey }
      : {};
    this.#pub = new Publisher({ linger: 0, ...curve });
    this.#sub = new Subscriber({ linger: 0, ...curve });
    this.#sender = new SerialSender(this.#pub);
    this.#pub.connect(`tcp://${host}:${pubPort}`);
    this.#sub.connect(`tcp://${host}:${subPort}`);
    this.#sub.subscribe('update');
    const sub = this.#sub;
    void (async () => {
      for await (const frames of sub) {
        const topic = frames[0]?.toString() ?? '';
        if (topic.startsWith('update.gateway.heartbeat')) continue;
        let envelope: Envelope | undefined;
        try {
          envelope = decodeEnvelope(frames[1] ?? new Uint8Array());
        } catch {
          envelope = undefined;
        }
        if (envelope?.source === this.source) continue;
        this.received.push({ topic, frames, ...(envelope ? { envelope } : {}) });
      }
    })().catch(() => undefined);
  }

  /** Waits until a message sent now would reach subscribers (ZeroMQ drops until subscriptions travel). */
  async settle(ms = 700): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }

  async send<Desc extends DescMessage>(
    topic: string,
    schema: Desc,
    message: MessageShape<Desc>,
    attributes: Record<string, string> = {},
  ): Promise<void> {
    await this.sendFrames(topic, encodeEnvelope(topic, schema, message, { source: this.source, attributes }));
  }

  /** One send at a time, as ZeroMQ sockets require. */
  sendFrames(...frames: (string | Uint8Array)[]): Promise<void> {
    return this.#sender.send(frames);
  }

  /** The answer carrying `correlationId`, unpacked as `schema`. */
  async answer<Desc extends DescMessage>(
    correlationId: string,
    schema: Desc,
    timeoutMs = 15_000,
  ): Promise<{ topic: string; envelope: Envelope; payload: MessageShape<Desc> }> {
    const found = await this.waitFor(
      (m) => m.envelope?.attributes.correlation_id === correlationId,
      timeoutMs,
    );
    const envelope = found.envelope as Envelope;
    return { topic: found.topic, envelope, payload: unpackPayload(envelope, schema) };
  }

  /** Sends a request with a fresh correlation id and waits for its answer. */
  async ask<Res extends DescMessage>(
    topic: string,
    request: { schema: DescMessage; message: MessageShape<DescMessage> },
    response: Res,
    attributes: Record<string, string> = {},
    timeoutMs = 30_000,
  ) {
    const id = randomUUID();
    await this.send(topic, request.schema, request.message, { correlation_id: id, ...attributes });
    return this.answer(id, response, timeoutMs);
  }

  async waitFor(
    match: (m: ZmqPeer['received'][number]) => boolean,
    timeoutMs = 15_000,
  ): Promise<ZmqPeer['received'][number]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error('timed out waiting for a bus message');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.#pub.close();
    this.#sub.close();
  }
}

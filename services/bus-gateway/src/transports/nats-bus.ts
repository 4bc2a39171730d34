import { natsSubject, topicOfSubject } from '@aico-update/aico-bus';
import type { Logger } from '@aico-update/shared';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { BusTransport, InboundMessage } from './transport.ts';

/*
 * The NATS generation: the same AicoMessage bytes on AICO's subjects (topic with dots, `aico.<tenant>.`
 * in front when a tenant is configured); requests come with a NATS inbox to answer through.
 */

export interface NatsBusOptions {
  servers: string[];
  tenant: string | undefined;
  name: string;
  logger: Logger;
}

export class NatsBus implements BusTransport {
  readonly kind = 'nats';
  readonly #options: NatsBusOptions;
  #nc: NatsConnection | undefined;
  #connected = false;

  constructor(options: NatsBusOptions) {
    this.#options = options;
  }

  async start(onMessage: (message: InboundMessage) => void): Promise<void> {
    const { servers, tenant, name, logger } = this.#options;
    const nc = await connect({ servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 1000 });
    this.#nc = nc;
    this.#connected = true;
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === 'disconnect') this.#connected = false;
        if (status.type === 'reconnect') this.#connected = true;
        if (status.type === 'disconnect' || status.type === 'reconnect')
          logger.warn({ status: status.type }, `AICO NATS ${status.type}`);
      }
    })();
    nc.subscribe(natsSubject('update.>', tenant), {
      callback: (error, msg) => {
        if (error) return;
        onMessage({
          topic: topicOfSubject(msg.subject, tenant),
          rawTopic: msg.subject,
          frames: 2,
          data: msg.data,
          ...(msg.reply ? { respond: (data: Uint8Array) => void msg.respond(data) } : {}),
        });
      },
    });
    await nc.flush();
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    await this.publishVerbatim(natsSubject(topic, this.#options.tenant), data);
  }

  async publishVerbatim(subject: string, data: Uint8Array): Promise<void> {
    if (!this.#nc) throw new Error('the NATS bus is not started');
    this.#nc.publish(subject, data);
  }

  connected(): boolean {
    return this.#connected && !this.#nc?.isClosed();
  }

  problem(): string | undefined {
    return this.connected()
      ? undefined
      : `not connected to AICO's NATS at ${this.#options.servers.join(', ')}`;
  }

  async close(): Promise<void> {
    await this.#nc?.drain().catch(() => undefined);
  }
}

/** One message as it came off AICO's bus, before anything is trusted about it. */
export interface InboundMessage {
  /** The canonical topic (dots, no version), or undefined when the topic frame/subject is not one. */
  topic: string | undefined;
  /** As received (topic frame or NATS subject), for logs. */
  rawTopic: string;
  /** ZeroMQ frames in the message; NATS messages count as 2 (subject + payload). */
  frames: number;
  /** The serialized AicoMessage (frame 1). */
  data: Uint8Array;
  /** A NATS request: answer through its inbox. */
  respond?: (data: Uint8Array) => void;
}

/** AICO's bus, either generation. Topics in and out are canonical; the transport spells them. */
export interface BusTransport {
  readonly kind: 'zeromq' | 'nats';
  start(onMessage: (message: InboundMessage) => void): Promise<void>;
  publish(topic: string, data: Uint8Array): Promise<void>;
  /** Publishes on a topic exactly as a requester named it (its `reply_to`). */
  publishVerbatim(topic: string, data: Uint8Array): Promise<void>;
  /** The bus carries messages now (a round trip through the broker, or a live NATS connection). */
  connected(): boolean;
  /** Why not, for readiness and logs. */
  problem(): string | undefined;
  close(): Promise<void>;
}

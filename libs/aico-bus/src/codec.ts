import { randomUUID } from 'node:crypto';
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from '@bufbuild/protobuf';
import { type Any, anyPack, anyUnpack, timestampFromDate } from '@bufbuild/protobuf/wkt';
import { type AicoMessage, AicoMessageSchema, MessageMetadataSchema } from './gen/aico/core/envelope_pb.js';

/*
 * The AICO envelope: `aico.core.AicoMessage` with metadata (uuid4 message id, timestamp, source, message
 * type = topic, version "1.0", attributes) and the payload packed as `google.protobuf.Any` with type URL
 * `type.googleapis.com/aico.core.<MessageName>`. Request/reply rides on `attributes.correlation_id` and
 * `attributes.reply_to`.
 */

export const ENVELOPE_VERSION = '1.0';

export interface Envelope {
  messageId: string;
  timestamp: Date | undefined;
  source: string;
  messageType: string;
  version: string;
  attributes: Record<string, string>;
  payload: Any | undefined;
}

export class BusDecodeError extends Error {
  override name = 'BusDecodeError';
  /** Counted by this: `protobuf`, `no_metadata`, `no_payload`, `payload_type`, `payload_protobuf`. */
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

export function encodeEnvelope<Desc extends DescMessage>(
  topic: string,
  schema: Desc,
  payload: MessageShape<Desc>,
  options: { source: string; attributes?: Record<string, string>; messageId?: string; now?: Date },
): Uint8Array {
  const message: AicoMessage = create(AicoMessageSchema, {
    metadata: create(MessageMetadataSchema, {
      messageId: options.messageId ?? randomUUID(),
      timestamp: timestampFromDate(options.now ?? new Date()),
      source: options.source,
      messageType: topic,
      version: ENVELOPE_VERSION,
      attributes: options.attributes ?? {},
    }),
    payload: { case: 'anyPayload', value: anyPack(schema, payload) },
  });
  return toBinary(AicoMessageSchema, message);
}

export function decodeEnvelope(bytes: Uint8Array): Envelope {
  let message: AicoMessage;
  try {
    message = fromBinary(AicoMessageSchema, bytes);
  } catch (error) {
    throw new BusDecodeError('protobuf', `not an aico.core.AicoMessage: ${(error as Error).message}`);
  }
  const { metadata } = message;
  if (!metadata) throw new BusDecodeError('no_metadata', 'the AicoMessage has no metadata');
  const ts = metadata.timestamp;
  return {
    messageId: metadata.messageId,
    timestamp: ts ? new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)) : undefined,
    source: metadata.source,
    messageType: metadata.messageType,
    version: metadata.version,
    attributes: { ...metadata.attributes },
    payload: message.payload.case === 'anyPayload' ? message.payload.value : undefined,
  };
}

/** The payload as `schema`, or a BusDecodeError naming what came instead. */
export function unpackPayload<Desc extends DescMessage>(
  envelope: Envelope,
  schema: Desc,
): MessageShape<Desc> {
  if (!envelope.payload) throw new BusDecodeError('no_payload', 'the AicoMessage has no payload');
  const expected = `type.googleapis.com/${schema.typeName}`;
  if (envelope.payload.typeUrl !== expected) {
    throw new BusDecodeError(
      'payload_type',
      `expected a ${schema.typeName} payload, got ${envelope.payload.typeUrl || 'an untyped Any'}`,
    );
  }
  try {
    const value = anyUnpack(envelope.payload, schema);
    if (!value) throw new Error('no value');
    return value;
  } catch (error) {
    throw new BusDecodeError(
      'payload_protobuf',
      `the ${schema.typeName} payload does not parse: ${(error as Error).message}`,
    );
  }
}

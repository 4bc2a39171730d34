import { create, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import {
  AicoMessageSchema,
  BusDecodeError,
  ComponentType,
  canonicalTopic,
  decodeEnvelope,
  encodeEnvelope,
  natsSubject,
  spellTopic,
  topicOfSubject,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  unpackPayload,
} from '../../src/index.ts';

describe('AICO envelope', () => {
  it('round-trips a payload packed as Any with its metadata', () => {
    const now = new Date('2026-11-27T03:00:00.123Z');
    const bytes = encodeEnvelope(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, { componentType: ComponentType.COMPONENT_BACKEND, deviceId: 'd1' }),
      { source: 'frontend-1', attributes: { correlation_id: 'c1', reply_to: 'update.check.response' }, now },
    );
    const envelope = decodeEnvelope(bytes);
    expect(envelope).toMatchObject({
      source: 'frontend-1',
      messageType: 'update.check.request',
      version: '1.0',
      attributes: { correlation_id: 'c1', reply_to: 'update.check.response' },
      timestamp: now,
    });
    expect(envelope.messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect(envelope.payload?.typeUrl).toBe('type.googleapis.com/aico.core.UpdateCheckRequest');
    expect(unpackPayload(envelope, UpdateCheckRequestSchema)).toMatchObject({
      componentType: ComponentType.COMPONENT_BACKEND,
      deviceId: 'd1',
    });
  });

  it('names what is wrong: garbage, no metadata, no payload, a payload of another type', () => {
    const reason = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(BusDecodeError);
        return (error as BusDecodeError).reason;
      }
      throw new Error('did not throw');
    };
    expect(reason(() => decodeEnvelope(new Uint8Array([0xff, 0xff, 0xff, 0x0f, 0x01])))).toBe('protobuf');
    expect(reason(() => decodeEnvelope(toBinary(AicoMessageSchema, create(AicoMessageSchema, {}))))).toBe(
      'no_metadata',
    );
    const noPayload = toBinary(AicoMessageSchema, create(AicoMessageSchema, { metadata: { source: 'x' } }));
    expect(reason(() => unpackPayload(decodeEnvelope(noPayload), UpdateCheckRequestSchema))).toBe(
      'no_payload',
    );
    const other = encodeEnvelope(
      'update.check.request',
      UpdateCheckResponseSchema,
      create(UpdateCheckResponseSchema),
      {
        source: 'x',
      },
    );
    expect(reason(() => unpackPayload(decodeEnvelope(other), UpdateCheckRequestSchema))).toBe('payload_type');
  });
});

describe('topic spellings', () => {
  it('accepts dots, slashes and a /v1 suffix, and publishes in the configured style', () => {
    for (const raw of ['update.check.request', 'update/check/request', 'update/check/request/v1']) {
      expect(canonicalTopic(raw)).toBe('update.check.request');
    }
    expect(canonicalTopic('update')).toBeUndefined();
    expect(canonicalTopic('Update..x')).toBeUndefined();
    expect(spellTopic('update.install.progress', 'dots')).toBe('update.install.progress');
    expect(spellTopic('update.install.progress', 'slashes')).toBe('update/install/progress');
    expect(spellTopic('update.install.progress', 'slashes_v1')).toBe('update/install/progress/v1');
  });

  it('maps topics to AICO NATS subjects with an optional tenant prefix', () => {
    expect(natsSubject('update.available', 'default')).toBe('aico.default.update.available');
    expect(natsSubject('update.available', undefined)).toBe('update.available');
    expect(topicOfSubject('aico.home.update.check.request', 'home')).toBe('update.check.request');
    expect(topicOfSubject('aico.other.update.check.request', 'home')).toBeUndefined();
  });
});

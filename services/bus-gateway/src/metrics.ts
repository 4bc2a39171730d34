import { METRIC_PREFIX } from '@aico-update/shared';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;

/** `busConnected` is read at every scrape. */
export function createGatewayMetrics(registry: Registry, busConnected: () => boolean) {
  const registers = [registry];
  return {
    devices: new Gauge({
      name: `${METRIC_PREFIX}devices`,
      help: 'Registered frontend devices by platform and the frontend version they reported.',
      labelNames: ['platform', 'version'] as const,
      registers,
    }),
    messagesIn: new Counter({
      name: `${METRIC_PREFIX}bus_messages_in_total`,
      help: 'Well-formed messages received from the AICO bus, by canonical topic.',
      labelNames: ['topic'] as const,
      registers,
    }),
    messagesOut: new Counter({
      name: `${METRIC_PREFIX}bus_messages_out_total`,
      help: 'Messages published on the AICO bus, by canonical topic.',
      labelNames: ['topic'] as const,
      registers,
    }),
    malformed: new Counter({
      name: `${METRIC_PREFIX}bus_malformed_messages_total`,
      help: 'Bus messages dropped or refused, by reason (frames, too_large, protobuf, payload_type, unknown_topic, no_correlation_id, duplicate, rate_limited, busy, …).',
      labelNames: ['reason'] as const,
      registers,
    }),
    requestDuration: new Histogram({
      name: `${METRIC_PREFIX}bus_request_duration_seconds`,
      help: 'From a bus request to its answer, by canonical topic.',
      labelNames: ['topic'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    }),
    controlRefused: new Counter({
      name: `${METRIC_PREFIX}control_requests_refused_total`,
      help: 'Control API requests refused, by reason (token, host, origin, media_type, rate).',
      labelNames: ['reason'] as const,
      registers,
    }),
    connected: new Gauge({
      name: `${METRIC_PREFIX}bus_connected`,
      help: '1 when messages make the round trip through the AICO bus, else 0.',
      registers,
      collect() {
        this.set(busConnected() ? 1 : 0);
      },
    }),
  };
}

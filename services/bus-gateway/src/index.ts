export {
  AICO_BROKER_PUBLIC_KEY,
  AICO_BROKER_SECRET_KEY,
  type GatewayConfig,
  gatewayConfigSchema,
} from './config.ts';
export { type RunningGateway, startGateway } from './main.ts';
export { SerialSender, ZeroMqBroker, ZeroMqBus } from './transports/zeromq.ts';

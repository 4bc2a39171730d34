export {
  create,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  toJson,
} from '@bufbuild/protobuf';
export { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
export * from './codec.ts';
export * from './gen/aico/core/envelope_pb.js';
export * from './gen/aico/core/update_system_pb.js';
export * from './topics.ts';

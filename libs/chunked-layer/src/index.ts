export * from './build.ts';
export * from './chunk-catalog.ts';
export * from './chunk-index.ts';
export * from './delta-plan.ts';
export * from './fastcdc.ts';
export { ChunkVerificationError, type OpenRange } from './pack-reader.ts';
export * from './rebuild.ts';
export * from './tar-split.ts';

export * from './build.ts';
export * from './chunk-index.ts';
export * from './delta-plan.ts';
export * from './fastcdc.ts';
export * from './rebuild.ts';
export * from './tar-split.ts';

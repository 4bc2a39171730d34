export * from './keys.ts';
export * from './repository.ts';
export * from './serve.ts';

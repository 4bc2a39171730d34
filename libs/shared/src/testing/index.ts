export * from './faults.ts';
export * from './servers.ts';

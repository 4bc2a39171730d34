export * from './browser.ts';
export * from './disk.ts';
export * from './docker.ts';
export * from './fakes.ts';
export * from './faults.ts';
export * from './servers.ts';
export * from './wait.ts';

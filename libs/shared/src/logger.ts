import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/** JSON logs on stdout, one logger per service; children add context (`logger.child({ job })`). */
export function createLogger(service: string, level: string = 'info'): Logger {
  return pino({
    name: service,
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}

import type { z } from 'zod';
import { loadConfig } from './config.ts';
import { ConfigError } from './errors.ts';
import { createLogger, type Logger } from './logger.ts';

/** Exit codes a supervisor (Docker, systemd) can tell apart; from BSD sysexits. */
export const ExitCode = {
  ok: 0,
  stopUnclean: 1,
  /** A dependency (Redis, NATS, …) could not be reached at start. */
  unavailable: 69,
  /** A bug: uncaught exception or unhandled rejection. */
  software: 70,
  /** Bad configuration: the log names each key, value and what is allowed. */
  config: 78,
} as const;

export interface RunningService {
  stop(): Promise<boolean>;
}

/** A started service and the port its HTTP face listens on (0 in config: any free port). */
export interface RunningHttpService extends RunningService {
  port: number;
}

/**
 * A service's `main`: load and validate config (exit 78 listing every problem), start (exit 69 when a
 * dependency is unreachable), stop cleanly on SIGTERM/SIGINT, and never limp on after an uncaught error.
 * The only place a service calls process.exit.
 */
export async function runService<S extends z.ZodType>(
  name: string,
  schema: S,
  start: (config: z.output<S>, logger: Logger) => Promise<RunningService>,
): Promise<void> {
  let config: z.output<S>;
  try {
    config = loadConfig(schema);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    createLogger(name).fatal({ problems: error.problems }, error.message);
    process.exit(ExitCode.config);
  }
  const level = (config as { log?: { level?: string } }).log?.level ?? 'info';
  const logger = createLogger(name, level);
  const fatal = (what: string) => (error: unknown) => {
    logger.fatal({ err: error }, `${what}; exiting`);
    process.exit(ExitCode.software);
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled rejection'));
  let service: RunningService;
  try {
    service = await start(config, logger);
  } catch (error) {
    logger.fatal({ err: error }, `${name} could not start: ${(error as Error).message}`);
    process.exit(ExitCode.unavailable);
  }
  const stop = (signal: string) => {
    logger.info({ signal }, 'stopping');
    void service.stop().then((clean) => process.exit(clean ? ExitCode.ok : ExitCode.stopUnclean));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

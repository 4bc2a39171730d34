/**
 * The one error base of the update system. `code` is stable (alerts, metrics and API clients branch on
 * it); `message` says what happened, what was expected and what to do.
 */
export class AppError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A configuration value is missing or not allowed. Fatal at start. */
export class ConfigError extends AppError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(
      'CONFIG_INVALID',
      `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  - ${problems.join('\n  - ')}`,
    );
    this.problems = problems;
  }
}

/** True for Node's "no such file or directory" errors. */
export function isNotFound(error: unknown): boolean {
  return hasCode(error, 'ENOENT');
}

/** True when `error` carries the given Node/system error code. */
export function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

/** Message of any thrown value, for logs and events. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

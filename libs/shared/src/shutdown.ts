import type { Logger } from 'pino';

type Closer = { name: string; close: () => Promise<unknown> | unknown };

/**
 * Closers registered in start order run in reverse on stop. Each runs once; one failing does not stop
 * the others; the whole stop has a deadline below the container's stop grace period.
 */
export class Shutdown {
  readonly #closers: Closer[] = [];
  readonly #logger: Logger;
  #stopping: Promise<boolean> | undefined;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  add(name: string, close: Closer['close']): void {
    this.#closers.push({ name, close });
  }

  /** Resolves true when every closer finished cleanly within the deadline. Safe to call twice. */
  stop(deadlineMs = 8000): Promise<boolean> {
    this.#stopping ??= this.#run(deadlineMs);
    return this.#stopping;
  }

  async #run(deadlineMs: number): Promise<boolean> {
    let clean = true;
    const deadline = Date.now() + deadlineMs;
    for (const closer of [...this.#closers].reverse()) {
      const left = deadline - Date.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(closer.close),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`did not close within the deadline`)),
              Math.max(left, 0),
            );
          }),
        ]);
      } catch (error) {
        clean = false;
        this.#logger.error({ err: error, closer: closer.name }, `shutdown: closing ${closer.name} failed`);
      } finally {
        clearTimeout(timer);
      }
    }
    return clean;
  }
}

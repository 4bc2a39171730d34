import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { hasCode, type Logger, parseJsonOrUndefined, writeFileAtomic } from '@aico-update/shared';
import type { z } from 'zod';

/*
 * A JSON file on the installer's own volume (its installed releases, its holds): written only by this
 * service, atomically, and parsed with its schema when read. Missing means "nothing yet"; unreadable
 * means a damaged volume: said in the log, and read as nothing yet.
 */
export class OwnFile<S extends z.ZodType> {
  readonly #file: string;
  readonly #schema: S;
  readonly #empty: () => z.output<S>;
  readonly #logger: Logger;
  readonly #what: string;

  constructor(file: string, options: { schema: S; empty: () => z.output<S>; logger: Logger; what: string }) {
    this.#file = file;
    this.#schema = options.schema;
    this.#empty = options.empty;
    this.#logger = options.logger;
    this.#what = options.what;
  }

  async read(): Promise<z.output<S>> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (error) {
      if (hasCode(error, 'ENOENT')) return this.#empty();
      throw error;
    }
    const parsed = this.#schema.safeParse(parseJsonOrUndefined(text));
    if (!parsed.success) {
      this.#logger.error(
        { file: this.#file, issues: parsed.error.issues },
        `${this.#what} is not valid; ignoring it`,
      );
      return this.#empty();
    }
    return parsed.data;
  }

  async write(value: z.output<S>): Promise<void> {
    await mkdir(dirname(this.#file), { recursive: true });
    await writeFileAtomic(this.#file, JSON.stringify(value, null, 2));
  }
}

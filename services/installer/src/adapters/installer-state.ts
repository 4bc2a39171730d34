import { join } from 'node:path';
import { COMPONENTS, type Logger, releaseRefSchema } from '@aico-update/shared';
import { z } from 'zod';
import { OwnFile } from './own-file.ts';

/*
 * What the installer knows of its own installs, on its own volume (no other service writes there): per
 * component the installed release and the image each service runs for it (what drift is judged against),
 * and the last install (what an operator's rollback undoes). Redis gets copies for the other services
 * to read; the installer never takes them back from there.
 */

const imageId = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const serviceName = z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/);

const installedSchema = z.object({
  version: z.string(),
  /** Release service → the signed image id it runs. */
  images: z.record(serviceName, imageId),
  installed_at: z.string(),
});
export type InstalledRelease = z.infer<typeof installedSchema>;

const lastInstallSchema = z.object({
  release: releaseRefSchema,
  from_version: z.string().optional(),
  backup_id: z.string().optional(),
  services: z.array(z.object({ service: serviceName, container: z.string(), imageId })),
});
/** What an operator's rollback needs to know of the last install of a component. */
export type LastInstall = z.infer<typeof lastInstallSchema>;

const stateSchema = z.object({
  v: z.literal(1),
  installed: z.partialRecord(z.enum(COMPONENTS), installedSchema).default({}),
  last_install: z.partialRecord(z.enum(COMPONENTS), lastInstallSchema).default({}),
  /** Per service, the downtimes of its last swaps in seconds (newest last): what a dry run expects. */
  downtime: z.record(serviceName, z.array(z.number().nonnegative())).default({}),
});
type State = z.infer<typeof stateSchema>;
type Component = (typeof COMPONENTS)[number];

export class InstallerState {
  readonly #store: OwnFile<typeof stateSchema>;

  constructor(stateDir: string, logger: Logger) {
    this.#store = new OwnFile(join(stateDir, 'installed.json'), {
      schema: stateSchema,
      empty: () => ({ v: 1, installed: {}, last_install: {}, downtime: {} }),
      logger,
      what: 'the installer state',
    });
  }

  async installed(component: Component): Promise<InstalledRelease | undefined> {
    return (await this.#read()).installed[component];
  }

  async allInstalled(): Promise<State['installed']> {
    return (await this.#read()).installed;
  }

  async lastInstall(component: Component): Promise<LastInstall | undefined> {
    return (await this.#read()).last_install[component];
  }

  async recordInstalled(
    component: Component,
    release: InstalledRelease,
    last?: LastInstall | null,
  ): Promise<void> {
    const state = await this.#read();
    state.installed[component] = release;
    if (last) state.last_install[component] = last;
    if (last === null) delete state.last_install[component];
    await this.#write(state);
  }

  /** Remembers how long a swap of a service took from stop to healthy (the last 5 are kept). */
  async recordDowntime(service: string, seconds: number): Promise<void> {
    const state = await this.#read();
    state.downtime[service] = [...(state.downtime[service] ?? []), seconds].slice(-5);
    await this.#write(state);
  }

  async downtimes(): Promise<Record<string, number[]>> {
    return (await this.#read()).downtime;
  }

  async #read(): Promise<State> {
    return this.#store.read();
  }

  async #write(state: State): Promise<void> {
    await this.#store.write(state);
  }
}

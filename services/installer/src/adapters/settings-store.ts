import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  effectiveSettings,
  hasCode,
  LiveSettings,
  type Logger,
  parseJsonOrUndefined,
  parseSettingsChange,
  SETTING_KEYS,
  type SettingKey,
  type SettingsChange,
  type SettingsRequest,
  type SettingsState,
  settingsStateSchema,
  type UpdatePolicy,
  writeFileAtomic,
} from '@aico-update/shared';

/*
 * The user's settings, kept by the installer on its own volume (`settings.json`): what a frontend or the
 * control API set, over the configuration's values. `live.policy` is the object the installer decides
 * with; a change is applied to it at once.
 */

export type SettingsChangeResult =
  | { ok: true; state: SettingsState; changed: SettingKey[] }
  | { ok: false; problems: string[]; state: SettingsState };

export class SettingsStore {
  readonly live: LiveSettings;
  readonly #file: string;
  readonly #defaults: UpdatePolicy;
  #state: SettingsState;

  private constructor(file: string, defaults: UpdatePolicy, state: SettingsState, logger: Logger) {
    this.#file = file;
    this.#defaults = defaults;
    this.#state = state;
    this.live = new LiveSettings(defaults, logger);
    this.live.apply(state, 'settings.json');
  }

  static async open(stateDir: string, defaults: UpdatePolicy, logger: Logger): Promise<SettingsStore> {
    const file = join(stateDir, 'settings.json');
    let stored: Pick<SettingsState, 'revision' | 'updated_at' | 'source' | 'overrides'> = {
      revision: 0,
      updated_at: new Date().toISOString(),
      source: 'configuration',
      overrides: {},
    };
    try {
      const parsed = settingsStateSchema
        .pick({ revision: true, updated_at: true, source: true, overrides: true })
        .safeParse(parseJsonOrUndefined(await readFile(file, 'utf8')));
      if (parsed.success) stored = parsed.data;
      else
        logger.error(
          { file, issues: parsed.error.issues },
          'the stored settings are not valid; using the configuration',
        );
    } catch (error) {
      if (!hasCode(error, 'ENOENT')) throw error;
    }
    return new SettingsStore(file, defaults, stateOf(defaults, stored), logger);
  }

  get state(): SettingsState {
    return this.#state;
  }

  /** Validates and applies a change (or a reset); nothing changes when any value is refused. */
  async change(request: SettingsRequest): Promise<SettingsChangeResult> {
    const parsed = parseSettingsChange(request.set ?? {});
    if (!parsed.ok) return { ok: false, problems: parsed.problems, state: this.#state };
    const overrides: SettingsChange = { ...this.#state.overrides };
    const reset = request.reset === true ? SETTING_KEYS : (request.reset ?? []);
    for (const key of reset) delete overrides[key];
    Object.assign(overrides, parsed.change);
    const before = this.#state.effective;
    const next = stateOf(this.#defaults, {
      revision: this.#state.revision + 1,
      updated_at: new Date().toISOString(),
      source: request.source ?? 'unknown',
      overrides,
    });
    const changed = SETTING_KEYS.filter((key) => before[key] !== next.effective[key]);
    await mkdir(join(this.#file, '..'), { recursive: true });
    await writeFileAtomic(
      this.#file,
      JSON.stringify(
        { v: 1, revision: next.revision, updated_at: next.updated_at, source: next.source, overrides },
        null,
        2,
      ),
    );
    this.#state = next;
    this.live.apply(next, 'change');
    return { ok: true, state: next, changed };
  }
}

function stateOf(
  defaults: UpdatePolicy,
  stored: Pick<SettingsState, 'revision' | 'updated_at' | 'source' | 'overrides'>,
): SettingsState {
  return { v: 1, ...stored, effective: effectiveSettings(defaults, stored.overrides) };
}

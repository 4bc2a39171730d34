import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, isNotFound } from './errors.ts';

/*
 * Configuration: one YAML file (optional) overlaid by environment variables, validated against the
 * service's schema at start. Every leaf key has an environment variable derived from its path:
 * `update.check_interval` → `AICO_UPDATE_CHECK_INTERVAL`. Each leaf's `.describe()` text says what is
 * allowed, so an error names the key, the value, where it came from and what would be accepted.
 */

export const ENV_PREFIX = 'AICO_';
export const CONFIG_FILE_ENV = 'AICO_CONFIG_FILE';

/** A boolean that also accepts the strings an environment variable carries (true/false, 1/0, yes/no, on/off). */
export function booleanSetting(defaultValue: boolean) {
  return z.union([z.boolean(), z.stringbool()]).default(defaultValue).describe('true or false');
}

interface NumberSettingOptions {
  default: number;
  min?: number;
  /** Exclusive lower bound. */
  above?: number;
  max: number;
  integer?: boolean;
  unit: string;
  /** Replaces the generated "a number of <unit> …" text. */
  allowed?: string;
}

/** A number that also accepts its decimal string form; bounds are part of the description. */
export function numberSetting(options: NumberSettingOptions) {
  let target = options.integer ? z.number().int() : z.number();
  if (options.min !== undefined) target = target.min(options.min);
  if (options.above !== undefined) target = target.gt(options.above);
  target = target.max(options.max);
  const lower =
    options.above !== undefined ? `> ${options.above}` : options.min !== undefined ? `≥ ${options.min}` : '';
  const allowed = `${options.integer ? 'a whole number' : 'a number'} of ${options.unit} ${lower} and ≤ ${options.max}`;
  return z
    .union([
      z.number(),
      z
        .string()
        .trim()
        .regex(/^-?\d+(\.\d+)?$/)
        .transform(Number),
    ])
    .pipe(target)
    .default(options.default)
    .describe(options.allowed ?? allowed.replace(/ {2}/g, ' '));
}

/** A list written as one string, `a,b,c` (what an environment variable carries), each item checked. */
export function commaListSetting<T extends z.ZodType<unknown, string>>(item: T, allowed: string) {
  return z
    .string()
    .default('')
    .transform((value) =>
      value
        .split(',')
        .map((part) => part.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item))
    .describe(allowed);
}

export const CHANNELS = ['stable', 'beta', 'dev'] as const;
export type Channel = (typeof CHANNELS)[number];

/**
 * The seed's seven `update.*` options with the seed's defaults, and two of AICO's UpdateSettings:
 * `auto_check` (scheduled checks on or off) and `allow_restart` (may an automatic install restart the
 * component, or only stage it). The config file and environment give the defaults; what the user sets
 * over the bus or the control API wins over them (settings.ts).
 */
export const updatePolicyFields = {
  check_interval: numberSetting({ default: 24, above: 0, max: 8760, unit: 'hours' }),
  auto_check: booleanSetting(true),
  auto_download: booleanSetting(true),
  auto_install: booleanSetting(false),
  critical_install: booleanSetting(true),
  allow_restart: booleanSetting(true),
  notify_available: booleanSetting(true),
  preferred_time: z
    .string()
    .regex(/^([01]\d|2[0-3]):[0-5]\d$/)
    .default('03:00')
    .describe('a time of day as HH:MM, 24-hour clock (e.g. 03:00)'),
  channel: z
    .enum(CHANNELS)
    .default('stable')
    .describe(`one of ${CHANNELS.join(', ')}`),
};
export const updatePolicySchema = z.strictObject(updatePolicyFields).prefault({});
export type UpdatePolicy = z.output<typeof updatePolicySchema>;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export const redisSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^rediss?:\/\//)
      .default('redis://127.0.0.1:6379')
      .describe('a Redis URL such as redis://redis:6379'),
    username: z.string().default('').describe('this service’s Redis ACL user (empty: none)'),
    password_file: z
      .string()
      .default('')
      .describe('a file holding the password of redis.username (the compose deployment generates it)'),
  })
  .prefault({});

export const natsSchema = z
  .strictObject({
    servers: z
      .string()
      .regex(/^(nats|tls|wss?):\/\/\S+$/)
      .default('nats://127.0.0.1:4222')
      .describe('one or more NATS URLs separated by commas, such as nats://nats:4222'),
    user: z.string().default('').describe('this service’s NATS user (empty: none)'),
    password_file: z
      .string()
      .default('')
      .describe('a file holding the password of nats.user (the compose deployment generates it)'),
  })
  .prefault({});

export function httpSchema(defaultPort: number) {
  return z
    .strictObject({
      host: z
        .string()
        .min(1)
        .default('0.0.0.0')
        .describe('an interface address to listen on, such as 0.0.0.0'),
      port: numberSetting({
        default: defaultPort,
        min: 0,
        max: 65535,
        integer: true,
        unit: 'port',
        allowed: 'a TCP port from 0 to 65535 (0: any free port)',
      }),
    })
    .prefault({});
}

export const logSchema = z
  .strictObject({
    level: z
      .enum(LOG_LEVELS)
      .default('info')
      .describe(`one of ${LOG_LEVELS.join(', ')}`),
  })
  .prefault({});

const httpUrl = z
  .string()
  .regex(/^https?:\/\/[^\s/]+/)
  .describe('an http(s) URL such as https://updates.example.org/metadata');

/** Where the TUF repository is and how to reach it. */
export const updateServerSchema = z
  .strictObject({
    metadata_url: httpUrl,
    targets_url: httpUrl
      .optional()
      .describe(
        'an http(s) URL; when unset, the folder "targets" beside the metadata URL (aico-release serve layout)',
      ),
    ca_file: z.string().min(1).optional().describe('a path to a PEM file of CA certificates to trust'),
    proxy: z
      .string()
      .regex(/^https?:\/\//)
      .optional()
      .describe('a proxy URL such as http://proxy:3128 (HTTPS_PROXY/NO_PROXY are honoured when unset)'),
    allow_insecure_http: booleanSetting(false),
    idle_timeout_seconds: numberSetting({ default: 30, above: 0, max: 3600, unit: 'seconds' }),
    connect_timeout_seconds: numberSetting({ default: 15, above: 0, max: 600, unit: 'seconds' }),
    retries: numberSetting({ default: 3, min: 0, max: 20, integer: true, unit: 'retries' }),
  })
  .superRefine((server, ctx) => {
    for (const key of ['metadata_url', 'targets_url'] as const) {
      if (server[key]?.startsWith('http://') && !server.allow_insecure_http) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message:
            'an https:// URL (plain http:// only with update_server.allow_insecure_http = true: TUF still verifies every file, but the transport is not private)',
        });
      }
    }
  })
  // An absent section parses as {} so that each missing required key is named on its own.
  .prefault({} as { metadata_url: string });

/** A service's TUF state: its own trusted metadata (rollback protection lives there) and the shipped root. */
export function tufStateSchema(defaultStateDir: string) {
  return z
    .strictObject({
      state_dir: z
        .string()
        .min(1)
        .default(defaultStateDir)
        .describe('a writable folder on a persistent volume for this service’s trusted TUF metadata'),
      trusted_root: z
        .string()
        .min(1)
        .default('/etc/aico-update/root.json')
        .describe('the path of the initial root.json the publisher distributes'),
    })
    .prefault({});
}

/** The targets URL: as configured, else the folder `targets` beside the metadata URL (`aico-release serve`). */
export function targetsUrlOf(server: { metadata_url: string; targets_url?: string | undefined }): string {
  const metadata = server.metadata_url.replace(/\/+$/, '');
  return server.targets_url ?? `${metadata.slice(0, metadata.lastIndexOf('/'))}/targets`;
}

/** Installed versions to seed when the shared state has none yet (the installer owns them afterwards). */
export const installedSeedSchema = z
  .record(
    z.string().regex(/^[a-z][a-z0-9-]*$/),
    z
      .string()
      .regex(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/)
      .describe('a semver version such as 1.0.0'),
  )
  .default({})
  .describe(
    'a map of component name to installed semver version (environment form: backend=1.0.0,frontend=1.2.0)',
  );

export interface LoadConfigOptions {
  /** YAML file; defaults to $AICO_CONFIG_FILE. A named file that does not exist is an error. */
  file?: string | undefined;
  env?: Record<string, string | undefined>;
}

interface Leaf {
  path: string[];
  schema: z.ZodType;
}

/**
 * Loads, overlays and validates configuration. Throws ConfigError listing every problem at once.
 */
export function loadConfig<S extends z.ZodType>(schema: S, options: LoadConfigOptions = {}): z.output<S> {
  const env = options.env ?? process.env;
  const file = options.file ?? env[CONFIG_FILE_ENV];
  const problems: string[] = [];
  const sources = new Map<string, string>();

  let raw: Record<string, unknown> = {};
  if (file) {
    try {
      raw = nestDottedKeys(parseYaml(readFileSync(file, 'utf8')) ?? {});
    } catch (error) {
      const why = isNotFound(error) ? 'file not found' : (error as Error).message;
      throw new ConfigError([`config file ${file}: ${why}. Fix the file or unset ${CONFIG_FILE_ENV}.`]);
    }
    for (const leaf of leavesOf(schema)) {
      if (getPath(raw, leaf.path) !== undefined) sources.set(leaf.path.join('.'), `file ${file}`);
    }
  }

  for (const leaf of leavesOf(schema)) {
    const name = envName(leaf.path);
    const value = env[name];
    // Empty counts as unset: what `${VAR:-}` in a compose file passes for a setting left out of .env.
    if (value === undefined || value === '') continue;
    setPath(raw, leaf.path, isRecordSchema(leaf.schema) ? parseEnvRecord(value) : value);
    sources.set(leaf.path.join('.'), `environment ${name}`);
  }

  const result = schema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(describeIssue(schema, raw, issue, sources));
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return (result as { data: z.output<S> }).data;
}

/** The environment variable that sets a key: `update.check_interval` → `AICO_UPDATE_CHECK_INTERVAL`. */
export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.join('_').toUpperCase();
}

/** Every settable key of a schema: its environment variable, default and what it allows (docs, --help). */
export function describeSettings(
  schema: z.ZodType,
): { key: string; env: string; default: unknown; allowed: string }[] {
  return leavesOf(schema).map((leaf) => ({
    key: leaf.path.join('.'),
    env: envName(leaf.path),
    default: defaultOf(leaf.schema),
    allowed: descriptionOf(leaf.schema) ?? '',
  }));
}

function defaultOf(schema: z.ZodType): unknown {
  for (let current: z.ZodType | undefined = schema; current; current = innerOf(current)) {
    const def = (current as unknown as { _zod: { def: { defaultValue?: unknown } } })._zod.def;
    if ('defaultValue' in def) return def.defaultValue;
  }
  return undefined;
}

/** Each problem of a failed parse as configuration errors are written: key, value, what is allowed. */
export function explainIssues(schema: z.ZodType, raw: Record<string, unknown>, error: z.ZodError): string[] {
  return error.issues.map((issue) => describeIssue(schema, raw, issue, new Map()));
}

function describeIssue(
  schema: z.ZodType,
  raw: Record<string, unknown>,
  issue: z.core.$ZodIssue,
  sources: Map<string, string>,
): string {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const parent = path.length ? path.join('.') : '(top level)';
    const allowed = childKeysAt(schema, path);
    return `${parent}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}; allowed: ${allowed.join(', ')}`;
  }
  const key = path.join('.');
  const value = getPath(raw, path);
  const leafSchema = schemaAt(schema, path);
  const allowed =
    issue.code === 'custom' ? issue.message : ((leafSchema && descriptionOf(leafSchema)) ?? issue.message);
  const source = sources.get(key) ?? sources.get(path.slice(0, -1).join('.'));
  const shown = value === undefined ? 'missing' : JSON.stringify(value);
  return `${key} = ${shown}${source ? ` (from ${source})` : ''}: allowed is ${allowed}`;
}

function innerOf(schema: z.ZodType): z.ZodType | undefined {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> } })._zod.def;
  const inner = def.innerType ?? def.in;
  return inner as z.ZodType | undefined;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (let inner = innerOf(current); inner; inner = innerOf(current)) current = inner;
  return current;
}

function descriptionOf(schema: z.ZodType): string | undefined {
  for (let current: z.ZodType | undefined = schema; current; current = innerOf(current)) {
    if (current.description) return current.description;
  }
  return undefined;
}

function isRecordSchema(schema: z.ZodType): boolean {
  return unwrap(schema) instanceof z.ZodRecord;
}

function leavesOf(schema: z.ZodType, prefix: string[] = []): Leaf[] {
  const bare = unwrap(schema);
  if (bare instanceof z.ZodObject) {
    return Object.entries(bare.shape as Record<string, z.ZodType>).flatMap(([key, child]) =>
      leavesOf(child, [...prefix, key]),
    );
  }
  return [{ path: prefix, schema }];
}

function schemaAt(schema: z.ZodType, path: string[]): z.ZodType | undefined {
  let current: z.ZodType | undefined = schema;
  for (const key of path) {
    const bare: z.ZodType | undefined = current && unwrap(current);
    if (bare instanceof z.ZodObject) current = (bare.shape as Record<string, z.ZodType>)[key];
    else if (bare instanceof z.ZodRecord) current = bare.valueType as z.ZodType;
    else return current;
  }
  return current;
}

function childKeysAt(schema: z.ZodType, path: string[]): string[] {
  const at = schemaAt(schema, path);
  const bare = at && unwrap(at);
  return bare instanceof z.ZodObject ? Object.keys(bare.shape) : [];
}

/** `a.b: 1` at the top of a YAML file means `a: {b: 1}`: the seed writes option names with dots. */
function nestDottedKeys(input: unknown): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new Error('expected a mapping of keys to values at the top of the file');
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    const path = key.split('.');
    const existing = getPath(out, path);
    if (existing && typeof existing === 'object' && value && typeof value === 'object') {
      Object.assign(existing, value);
    } else {
      setPath(out, path, value);
    }
  }
  return out;
}

/** `backend=1.0.0,frontend=1.2.0` → `{ backend: '1.0.0', frontend: '1.2.0' }`. */
function parseEnvRecord(value: string): Record<string, string> | string {
  const entries = value
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean);
  if (!entries.every((entry) => /^[^=]+=[^=]+$/.test(entry))) return value;
  return Object.fromEntries(
    entries.map((entry) => entry.split('=').map((s) => s.trim()) as [string, string]),
  );
}

function getPath(target: unknown, path: readonly string[]): unknown {
  let current = target;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let current = target;
  for (const key of path.slice(0, -1)) {
    const next = current[key];
    if (typeof next !== 'object' || next === null) current[key] = {};
    current = current[key] as Record<string, unknown>;
  }
  current[path[path.length - 1] as string] = value;
}

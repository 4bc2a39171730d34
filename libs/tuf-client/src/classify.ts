import { AppError, type CheckFailure } from '@aico-update/shared';
import { LengthOrHashMismatchError, UnsignedMetadataError } from '@tufjs/models/dist/error.js';
import {
  BadVersionError,
  DownloadHTTPError,
  DownloadLengthMismatchError,
  ExpiredMetadataError,
  PersistError,
} from 'tuf-js/dist/error.js';
import { FetchError } from './fetch-errors.ts';

/*
 * tuf-js exports no error classes from its entry and wraps snapshot/targets failures into a RuntimeError
 * whose message is all that is left of the cause. Operators must still learn which failure it was:
 * the network, stale metadata, or an attack. So: instanceof on what survives, the fetcher's own record
 * of a transport failure, then tuf-js's (stable, tested) message texts.
 */

/** A classified failure of a TUF operation; `code` is stable, `kind` groups codes for alerts. */
export class TufError extends AppError {
  readonly kind: CheckFailure['kind'];

  constructor(kind: CheckFailure['kind'], code: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.kind = kind;
  }

  toFailure(): CheckFailure {
    return { kind: this.kind, code: this.code, message: this.message };
  }
}

const ATTACK_ADVICE =
  'Nothing was installed and the previously trusted metadata is kept. If it persists, tell the publisher: the server or the path to it may be compromised.';

type Rule = { test: RegExp; kind: CheckFailure['kind']; code: string; what: string };

// Order matters: more specific first. Texts are tuf-js 6 / @tufjs/models 5 messages.
const MESSAGE_RULES: Rule[] = [
  {
    test: /Max length reached|more than the allowed \d+ bytes/,
    kind: 'attack',
    code: 'TUF_ENDLESS_DATA',
    what: 'the server sent more data than the signed or allowed length (endless data)',
  },
  {
    test: /Expected hash|Hash algorithm .* not supported/,
    kind: 'attack',
    code: 'TUF_HASH_MISMATCH',
    what: 'a file does not match its signed hash',
  },
  {
    test: /Expected length/,
    kind: 'attack',
    code: 'TUF_LENGTH_MISMATCH',
    what: 'a file does not match its signed length',
  },
  {
    test: /was signed by \d+\/\d+ keys/,
    kind: 'attack',
    code: 'TUF_BAD_SIGNATURE',
    what: 'metadata is not signed by enough trusted keys',
  },
  { test: /is expired/, kind: 'expired', code: 'TUF_EXPIRED', what: 'metadata has expired' },
  {
    test: /does not match snapshot version|doesn't match timestamp/,
    kind: 'attack',
    code: 'TUF_MIX_AND_MATCH',
    what: 'metadata versions do not match each other (mix-and-match)',
  },
  {
    test: /less than current version|Expected version \d+, got/,
    kind: 'attack',
    code: 'TUF_ROLLBACK',
    what: 'the server offered older metadata than already trusted (rollback)',
  },
  {
    test: /expected '(\w+)', got '?(\w+)/i,
    kind: 'attack',
    code: 'TUF_WRONG_TYPE',
    what: 'the server sent metadata of another role than the file it asked for (a wrong _type)',
  },
  {
    test: /is not defined|must be a|Unsupported specVersion|Unexpected token|JSON/,
    kind: 'attack',
    code: 'TUF_INVALID_METADATA',
    what: 'the server sent metadata that is not valid TUF metadata',
  },
  {
    // tuf-js wraps a snapshot or targets download failure into a message: a 404 survives only as text.
    test: /: HTTP 40[34]\b/,
    kind: 'unreachable',
    code: 'TUF_NOT_FOUND',
    what: 'the update server has no such metadata file',
  },
];

function chainOf(error: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = error; e && out.length < 10; e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

function messageOf(error: unknown): string {
  return chainOf(error)
    .map((e) => (e instanceof Error ? e.message : String(e)))
    .join(' <- ');
}

/** Classifies any failure of a refresh or target download. */
export function classifyTufError(error: unknown, lastFetchError?: FetchError): TufError {
  if (error instanceof TufError) return error;
  const chain = chainOf(error);
  const text = messageOf(error);
  const fetchError = chain.find((e): e is FetchError => e instanceof FetchError);
  if (fetchError) return fromFetchError(fetchError, error);

  const attack = (code: string, what: string) =>
    new TufError('attack', code, `update rejected: ${what} (${text}). ${ATTACK_ADVICE}`, { cause: error });

  for (const e of chain) {
    if (e instanceof DownloadLengthMismatchError)
      return attack('TUF_ENDLESS_DATA', 'the server sent more data than allowed (endless data)');
    if (e instanceof ExpiredMetadataError) return expired(text, error);
    if (e instanceof UnsignedMetadataError)
      return attack('TUF_BAD_SIGNATURE', 'metadata is not signed by enough trusted keys');
    if (e instanceof LengthOrHashMismatchError) {
      return /length/i.test(text)
        ? attack('TUF_LENGTH_MISMATCH', 'a file does not match its signed length')
        : attack('TUF_HASH_MISMATCH', 'a file does not match its signed hash');
    }
    if (e instanceof BadVersionError && !/does not match|doesn't match/.test(text)) {
      const root = /Expected version (\d+), got (\d+)/.exec(text);
      if (root && Number(root[2]) > Number(root[1])) {
        return attack(
          'TUF_VERSION_MISMATCH',
          `root metadata fetched as version ${root[1]} says it is version ${root[2]} (the version in the file differs from the one in its URL)`,
        );
      }
      return attack('TUF_ROLLBACK', 'the server offered older metadata than already trusted (rollback)');
    }
    if (e instanceof DownloadHTTPError) {
      return new TufError(
        'unreachable',
        'TUF_NOT_FOUND',
        `the update server has no such file (HTTP ${e.statusCode}): ${text}; check update_server.metadata_url and targets_url`,
        { cause: error },
      );
    }
    if (e instanceof PersistError) {
      return new TufError(
        'local',
        'TUF_LOCAL_STATE',
        `cannot write the trusted metadata on this machine: ${text}; check the volume's free space and permissions`,
        { cause: error },
      );
    }
  }
  // A wrapped transport failure: tuf-js kept only its message, the fetcher kept the error.
  if (lastFetchError && text.includes(lastFetchError.message)) return fromFetchError(lastFetchError, error);
  for (const rule of MESSAGE_RULES) {
    if (!rule.test.test(text)) continue;
    if (rule.kind === 'expired') return expired(text, error);
    if (rule.kind === 'unreachable') {
      const role = /Unable to load (\w+)/.exec(text)?.[1];
      return new TufError(
        'unreachable',
        rule.code,
        `${rule.what}${role ? ` (${role})` : ''}: ${text}; the repository is incomplete or update_server.metadata_url points at the wrong place. Nothing was installed; the check succeeds once the file is served`,
        { cause: error },
      );
    }
    return attack(rule.code, rule.what);
  }
  return new TufError('internal', 'TUF_INTERNAL', `update check failed unexpectedly: ${text}`, {
    cause: error,
  });
}

function expired(text: string, cause: unknown): TufError {
  return new TufError(
    'expired',
    'TUF_EXPIRED',
    `update metadata has expired (${text}): the publisher has not re-signed it (they should run "aico-release refresh"), ` +
      `or someone is serving old metadata (freeze attack). Nothing was installed; the check will succeed once fresh metadata is served.`,
    { cause },
  );
}

/** A transport failure is the network's unless it names this machine: its configuration or its disk. */
const FETCH_ERROR_KINDS: Record<string, CheckFailure['kind']> = {
  TUF_CA_FILE_UNREADABLE: 'config',
  DISK_FULL: 'local',
  DISK_WRITE_FAILED: 'local',
};

function fromFetchError(fetchError: FetchError, cause: unknown): TufError {
  if (fetchError.code === 'TUF_HASH_MISMATCH') {
    return new TufError(
      'attack',
      fetchError.code,
      `update rejected: ${fetchError.message}. ${ATTACK_ADVICE}`,
      { cause },
    );
  }
  return new TufError(
    FETCH_ERROR_KINDS[fetchError.code] ?? 'unreachable',
    fetchError.code,
    fetchError.message,
    {
      cause,
    },
  );
}

import { AppError } from '@aico-update/shared';

/*
 * What a failed transfer is called: the codes operators and the classifier see (TUF_TLS_UNTRUSTED,
 * TUF_SLOW_RETRIEVAL, TUF_UNREACHABLE, DISK_FULL, …), each with what to do about it.
 */

/** A transport failure, with the code operators and the classifier see. */
export class FetchError extends AppError {
  readonly url: string;
  readonly transient: boolean;
  readonly status: number | undefined;

  constructor(
    code: string,
    message: string,
    url: string,
    transient: boolean,
    status?: number,
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.url = url;
    this.transient = transient;
    this.status = status;
  }
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_UNTRUSTED',
]);

export function transportError(url: string, error: unknown, when: string, idleTimedOut = false): FetchError {
  const code = idleTimedOut ? 'IDLE_TIMEOUT' : deepCode(error);
  const detail = `${code ?? ''} ${(error as Error)?.message ?? String(error)}`.trim();
  if (code && TLS_CODES.has(code)) {
    return new FetchError(
      'TUF_TLS_UNTRUSTED',
      `the update server's certificate is not trusted (${detail}) for ${url}; if it uses a private CA, set update_server.ca_file`,
      url,
      false,
      undefined,
      { cause: error },
    );
  }
  if (code === 'IDLE_TIMEOUT') {
    return new FetchError(
      'TUF_SLOW_RETRIEVAL',
      `no data from the update server ${when} within the idle timeout for ${url} (a stalled connection, or a slow-retrieval attack); update_server.idle_timeout_seconds sets the limit`,
      url,
      true,
      undefined,
      { cause: error },
    );
  }
  return new FetchError(
    'TUF_UNREACHABLE',
    `cannot reach the update server ${when} (${detail}) for ${url}; check the network and update_server.metadata_url`,
    url,
    true,
    undefined,
    { cause: error },
  );
}

/** A failed write or flush of a partial download: this machine's disk, not the server. Not retried at once. */
export function diskError(url: string, file: string, error: Error, resumable = false): FetchError {
  const code = (error as NodeJS.ErrnoException).code;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  return new FetchError(
    full ? 'DISK_FULL' : 'DISK_WRITE_FAILED',
    `${full ? 'no space left on the device' : `cannot write to the disk (${code ?? error.message})`} while writing ${file} ` +
      `for ${url}: free disk space on that volume${full ? '' : ' or check it for errors'}` +
      (resumable ? '; the bytes written so far are kept and the download resumes from them' : ''),
    url,
    false,
    undefined,
    { cause: error },
  );
}

/** Proxies and agents may wrap the cause (ECONNREFUSED, a TLS code) in generic errors: find the specific one. */
const GENERIC_CODES = new Set(['ECONNRESET', 'ERR_STREAM_PREMATURE_CLOSE']);

function deepCode(error: unknown): string | undefined {
  let generic: string | undefined;
  for (let e = error as { code?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (typeof e.code !== 'string') continue;
    if (!GENERIC_CODES.has(e.code)) return e.code;
    generic ??= e.code;
  }
  return generic;
}

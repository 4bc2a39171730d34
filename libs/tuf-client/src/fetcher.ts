import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fsyncFile, hashFile } from '@aico-update/shared';
import { BaseFetcher } from 'tuf-js';
import { DownloadHTTPError, DownloadLengthMismatchError } from 'tuf-js/dist/error.js';
import { diskError, FetchError, transportError } from './fetch-errors.ts';
import type { RateLimiter } from './rate-limiter.ts';
import { endStream, WriteBehindFlusher } from './write-behind.ts';

/*
 * The fetcher tuf-js downloads through. What the default one lacks and an updater on a home network
 * needs: a custom CA (a private update server), proxies (explicit or HTTPS_PROXY/NO_PROXY), an idle
 * timeout instead of a deadline on the whole transfer (a slow link is fine, a stalled one is not), and
 * retries with backoff for transient failures, including failures in the middle of a body. tuf-js
 * still counts and hashes every byte; nothing here decides what is trusted.
 * Built on node:https rather than the undici package: Node ships its HTTP stack, a second copy costs
 * ~28 MiB of memory per service, and node:https streamed as fast as curl where undici did not.
 */

interface Response {
  statusCode: number;
  headers: IncomingMessage['headers'];
  body: IncomingMessage;
  /** True once the idle timeout destroyed the connection (the body then fails with a plain reset). */
  timedOut: () => boolean;
}

export interface FetcherOptions {
  /** PEM file of CA certificates trusted in addition to none: when set, only these are trusted. */
  caFile?: string | undefined;
  /** Explicit proxy URL; when absent HTTP_PROXY/HTTPS_PROXY/NO_PROXY from the environment apply. */
  proxy?: string | undefined;
  /** A transfer that receives no byte for this long fails (slow retrieval). */
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Extra attempts after the first for transient failures (network errors, 5xx, 429, idle timeout). */
  retries?: number;
  /** First backoff delay; doubles per attempt, capped at 30 s. */
  retryDelayMs?: number;
  /** Folder for partial downloads: keep it on the same disk as the cache, not tmpfs. */
  tmpDir?: string;
  userAgent?: string;
  /** Shared bandwidth cap for resumable (large) downloads. */
  rateLimiter?: RateLimiter | undefined;
}

export interface FetcherStats {
  requests: number;
  bytes: number;
  retries: number;
  verificationFailures: number;
}

export interface ResumableOutcome {
  /** Bytes received over the network for this target in this call. */
  fetchedBytes: number;
  /** Bytes that were already on disk from an earlier, interrupted download and were not fetched again. */
  resumedFromBytes: number;
  /** Times a resumed file failed verification and was fetched again from zero. */
  restarts: number;
}

function contentRangeStart(header: string | string[] | undefined): number | undefined {
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(String(header ?? ''));
  return match ? Number(match[1]) : undefined;
}

export class TufFetcher extends BaseFetcher {
  readonly stats: FetcherStats = { requests: 0, bytes: 0, retries: 0, verificationFailures: 0 };
  /** The last transport failure, so a failure tuf-js wraps into a plain message can still be classified. */
  lastError: FetchError | undefined;
  readonly #options: Required<Omit<FetcherOptions, 'caFile' | 'proxy' | 'tmpDir' | 'rateLimiter'>> & {
    tmpDir: string | undefined;
    rateLimiter: RateLimiter | undefined;
  };
  #agents: { http: HttpAgent; https: HttpsAgent } | undefined;
  readonly #caFile: string | undefined;
  readonly #proxy: string | undefined;

  constructor(options: FetcherOptions = {}) {
    super();
    this.#caFile = options.caFile;
    this.#proxy = options.proxy;
    this.#options = {
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 15_000,
      retries: options.retries ?? 3,
      retryDelayMs: options.retryDelayMs ?? 500,
      tmpDir: options.tmpDir,
      rateLimiter: options.rateLimiter,
      userAgent: options.userAgent ?? 'aico-update',
    };
  }

  async #getAgents(): Promise<{ http: HttpAgent; https: HttpsAgent }> {
    if (this.#agents) return this.#agents;
    let ca: string | undefined;
    if (this.#caFile) {
      try {
        ca = await readFile(this.#caFile, 'utf8');
      } catch (error) {
        throw new FetchError(
          'TUF_CA_FILE_UNREADABLE',
          `cannot read the CA file ${this.#caFile} (update_server.ca_file): ${(error as Error).message}`,
          '',
          false,
          undefined,
          { cause: error },
        );
      }
    }
    // An explicit proxy for everything; otherwise HTTPS_PROXY/HTTP_PROXY/NO_PROXY as the environment says.
    const proxyEnv = this.#proxy ? { HTTPS_PROXY: this.#proxy, HTTP_PROXY: this.#proxy } : { ...process.env };
    this.#agents = {
      http: new HttpAgent({ keepAlive: true, proxyEnv }),
      https: new HttpsAgent({ keepAlive: true, proxyEnv, ...(ca ? { ca } : {}) }),
    };
    return this.#agents;
  }

  /** tuf-js's streaming entry point; downloads go through downloadFile below, which retries. */
  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const { body } = await this.#open(url);
    return Readable.toWeb(body) as ReadableStream<Uint8Array<ArrayBuffer>>;
  }

  /**
   * Downloads to a temporary file (at most `maxLength` bytes: the signed length for targets, a cap for
   * metadata) and hands it to tuf-js's handler, which verifies it. Transient failures are retried.
   */
  override async downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T> {
    const base = this.#options.tmpDir ?? tmpdir();
    await mkdir(base, { recursive: true });
    const dir = await mkdtemp(join(base, 'aico-fetch-'));
    const file = join(dir, 'download');
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.#downloadTo(url, maxLength, file);
          break;
        } catch (error) {
          await this.#retryOrThrow(error, attempt);
        }
      }
      return await handler(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Downloads a large target to `dest` against its signed length and sha256, hashing as the bytes
   * arrive (the file is read once). A partial file survives failures and restarts: the next attempt
   * sends `Range: bytes=<have>-`; a server that answers 200 instead makes it start over. A file that
   * fails verification is deleted, and fetched once more from zero when it had been resumed (the old
   * partial may be what was wrong). Only a verified file is renamed to `dest`.
   */
  async downloadResumable(
    url: string,
    expected: { length: number; sha256: string },
    dest: string,
    options: { partialDir: string; onBytes?: (bytes: number) => void; signal?: AbortSignal },
  ): Promise<ResumableOutcome> {
    await mkdir(options.partialDir, { recursive: true });
    const partial = join(options.partialDir, `${expected.sha256}.part`);
    const outcome: ResumableOutcome = { fetchedBytes: 0, resumedFromBytes: 0, restarts: 0 };
    let freshAttemptsAfterMismatch = 1;
    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      try {
        const have = await this.#fetchInto(url, expected, partial, outcome, options);
        if (have.sha256 === expected.sha256 && have.length === expected.length) break;
        this.stats.verificationFailures += 1;
        await rm(partial, { force: true });
        if (have.resumed && freshAttemptsAfterMismatch-- > 0) {
          outcome.restarts += 1;
          continue;
        }
        throw new FetchError(
          'TUF_HASH_MISMATCH',
          `${url}: received ${have.length} bytes with sha256 ${have.sha256}, but the signed target has ${expected.length} bytes with sha256 ${expected.sha256}`,
          url,
          false,
        );
      } catch (error) {
        await this.#retryOrThrow(error, attempt, options.signal);
      }
    }
    await fsyncFile(partial);
    await rename(partial, dest);
    return outcome;
  }

  /** One attempt: continue `partial` from its current size (or from zero), hashing everything in it. */
  async #fetchInto(
    url: string,
    expected: { length: number; sha256: string },
    partial: string,
    outcome: ResumableOutcome,
    options: { onBytes?: (bytes: number) => void; signal?: AbortSignal },
  ): Promise<{ length: number; sha256: string; resumed: boolean }> {
    let have = (await stat(partial).catch(() => undefined))?.size ?? 0;
    if (have > expected.length) {
      await rm(partial, { force: true });
      have = 0;
    }
    if (have === expected.length) return { ...(await hashFile(partial)), resumed: true };
    const response = await this.#respond(url, have > 0 ? { range: `bytes=${have}-` } : {});
    const resumed =
      response.statusCode === 206 && contentRangeStart(response.headers['content-range']) === have;
    if (!resumed) have = 0;
    const hash = createHash('sha256');
    if (resumed) {
      for await (const chunk of createReadStream(partial)) hash.update(chunk as Buffer);
      outcome.resumedFromBytes += have;
    }
    // A few MiB of write buffer lets the network and the disk work at once; memory stays bounded.
    const file = await open(partial, resumed ? 'a' : 'w');
    const out = file.createWriteStream({ highWaterMark: 4 * 1024 * 1024 });
    // A failed write (a full disk) is read from out.errored; without a listener it would crash the process.
    out.on('error', () => undefined);
    const flusher = new WriteBehindFlusher(file);
    // An abort ends the transfer at once, also while the server sends nothing (a stall).
    const abort = () => response.body.destroy(options.signal?.reason);
    options.signal?.addEventListener('abort', abort, { once: true });
    let length = have;
    try {
      for await (const chunk of response.body) {
        options.signal?.throwIfAborted();
        if (out.errored) throw out.errored;
        const bytes = chunk as Buffer;
        length += bytes.length;
        if (length > expected.length) {
          throw new DownloadLengthMismatchError(
            `${url}: more than the signed ${expected.length} bytes (endless data)`,
          );
        }
        if (this.#options.rateLimiter) await this.#options.rateLimiter.take(bytes.length, options.signal);
        hash.update(bytes);
        this.stats.bytes += bytes.length;
        outcome.fetchedBytes += bytes.length;
        options.onBytes?.(bytes.length);
        if (!out.write(bytes)) await once(out, 'drain'); // rejects with the write's error
        flusher.wrote(bytes.length);
      }
      await flusher.settled();
      await endStream(out);
    } catch (error) {
      response.body.destroy();
      await flusher.settled().catch(() => undefined);
      await endStream(out).catch(() => undefined);
      if (error instanceof DownloadLengthMismatchError) {
        await rm(partial, { force: true });
        throw error;
      }
      if ((error as Error).name === 'AbortError') throw error;
      const diskFailure = out.errored ?? flusher.failure;
      if (diskFailure) throw this.#record(diskError(url, partial, diskFailure, true));
      throw this.#record(transportError(url, error, 'while receiving the body', response.timedOut()));
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
    if (length < expected.length) {
      // The server closed early without an error: a cut. Keep the partial and resume.
      throw this.#record(
        new FetchError(
          'TUF_UNREACHABLE',
          `${url}: connection closed after ${length} of ${expected.length} bytes`,
          url,
          true,
        ),
      );
    }
    return { length, sha256: hash.digest('hex'), resumed };
  }

  /**
   * Bytes [start, end) of a target, streamed: for the chunk delta, whose caller verifies every frame
   * against the signed chunk index. The server must answer 206 for exactly that range; more bytes than
   * asked are refused (endless data). A cut in the middle reopens the rest of the range, as a transient
   * failure of a whole download is retried.
   */
  async *openRange(
    url: string,
    start: number,
    end: number,
    options: { onBytes?: (bytes: number) => void; signal?: AbortSignal } = {},
  ): AsyncGenerator<Buffer> {
    let at = start;
    for (let attempt = 0; at < end; ) {
      options.signal?.throwIfAborted();
      let response: Response | undefined;
      try {
        response = await this.#respond(url, { range: `bytes=${at}-${end - 1}` });
        if (response.statusCode !== 206 || contentRangeStart(response.headers['content-range']) !== at) {
          throw this.#record(
            new FetchError(
              'TUF_RANGE_UNSUPPORTED',
              `${url}: the update server answered HTTP ${response.statusCode} to a range request; chunked downloads need a server that serves byte ranges`,
              url,
              false,
            ),
          );
        }
        const abort = () => response?.body.destroy(options.signal?.reason);
        options.signal?.addEventListener('abort', abort, { once: true });
        try {
          for await (const chunk of response.body) {
            const bytes = chunk as Buffer;
            if (at + bytes.length > end) {
              throw new DownloadLengthMismatchError(`${url}: more than the ${end - start} bytes asked for`);
            }
            if (this.#options.rateLimiter) await this.#options.rateLimiter.take(bytes.length, options.signal);
            at += bytes.length;
            this.stats.bytes += bytes.length;
            options.onBytes?.(bytes.length);
            yield bytes;
          }
        } finally {
          options.signal?.removeEventListener('abort', abort);
        }
        if (at < end) {
          throw this.#record(
            new FetchError('TUF_UNREACHABLE', `${url}: range closed ${end - at} bytes early`, url, true),
          );
        }
      } catch (error) {
        response?.body.destroy();
        if ((error as Error).name === 'AbortError') throw error;
        const failure =
          error instanceof FetchError || error instanceof DownloadLengthMismatchError
            ? error
            : this.#record(transportError(url, error, 'while receiving a range', response?.timedOut()));
        await this.#retryOrThrow(failure, attempt++, options.signal);
      }
    }
  }

  /** Rethrows what is not a transient failure or is past the retries; otherwise waits the backoff. */
  async #retryOrThrow(error: unknown, attempt: number, signal?: AbortSignal): Promise<void> {
    const retry = error instanceof FetchError && error.transient && attempt < this.#options.retries;
    if (!retry) throw error;
    this.stats.retries += 1;
    // Doubling per attempt, capped at 30 s.
    await sleep(Math.min(this.#options.retryDelayMs * 2 ** attempt, 30_000), undefined, { signal });
  }

  async close(): Promise<void> {
    this.#agents?.http.destroy();
    this.#agents?.https.destroy();
    this.#agents = undefined;
  }

  async #downloadTo(url: string, maxLength: number, file: string): Promise<void> {
    const response = await this.#open(url);
    const body = response.body;
    const out = createWriteStream(file);
    out.on('error', () => undefined); // read through out.errored: a short file must not pass for an attack
    let received = 0;
    try {
      for await (const chunk of body) {
        if (out.errored) throw out.errored;
        received += (chunk as Buffer).length;
        this.stats.bytes += (chunk as Buffer).length;
        if (received > maxLength) {
          // tuf-js's own class: the "endless data" defence, classified as such.
          throw new DownloadLengthMismatchError(
            `${url}: more than the allowed ${maxLength} bytes (endless data)`,
          );
        }
        if (!out.write(chunk)) await once(out, 'drain');
      }
      await endStream(out);
    } catch (error) {
      body.destroy();
      await endStream(out).catch(() => undefined);
      if (error instanceof DownloadLengthMismatchError) throw error;
      if (out.errored) throw this.#record(diskError(url, file, out.errored));
      throw this.#record(transportError(url, error, 'while receiving the body', response.timedOut()));
    }
  }

  async #open(url: string, headers: Record<string, string> = {}): Promise<Response> {
    return this.#respond(url, headers);
  }

  async #respond(url: string, headers: Record<string, string> = {}): Promise<Response> {
    this.stats.requests += 1;
    let response: Response;
    try {
      response = await this.#request(url, headers);
    } catch (error) {
      if (error instanceof FetchError) throw this.#record(error);
      throw this.#record(transportError(url, error, 'while connecting'));
    }
    const status = response.statusCode;
    if (status === 200 || (status === 206 && headers.range)) return response;
    response.body.resume();
    if (status === 403 || status === 404) {
      // tuf-js treats these (and only these, as DownloadHTTPError) as "no newer root": keep its class.
      throw new DownloadHTTPError(`${url}: HTTP ${status}`, status);
    }
    const transient = status >= 500 || status === 429 || status === 408;
    throw this.#record(
      new FetchError(
        transient ? 'TUF_SERVER_ERROR' : 'TUF_HTTP_STATUS',
        `the update server answered HTTP ${status} for ${url}${transient ? '' : '; check update_server.metadata_url and targets_url'}`,
        url,
        transient,
        status,
      ),
    );
  }

  /**
   * One GET. The socket's idle timeout covers connecting, waiting for headers and every gap in the body;
   * a separate connect timeout bounds the TCP and TLS handshake.
   */
  async #request(url: string, headers: Record<string, string>): Promise<Response> {
    const agents = await this.#getAgents();
    const secure = url.startsWith('https:');
    let timedOut = false;
    return new Promise<Response>((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(url, {
        agent: secure ? agents.https : agents.http,
        headers: { 'user-agent': this.#options.userAgent, ...headers },
      });
      req.setTimeout(this.#options.idleTimeoutMs, () => {
        timedOut = true;
        req.destroy(Object.assign(new Error('idle timeout'), { code: 'IDLE_TIMEOUT' }));
      });
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(
          () => req.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })),
          this.#options.connectTimeoutMs,
        );
        socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      req.on('response', (body) =>
        resolve({ statusCode: body.statusCode ?? 0, headers: body.headers, body, timedOut: () => timedOut }),
      );
      req.on('error', reject);
      req.end();
    });
  }

  #record(error: FetchError): FetchError {
    this.lastError = error;
    return error;
  }
}

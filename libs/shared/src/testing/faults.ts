import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join, normalize } from 'node:path';

/*
 * Fault injection for a real HTTP(S) file server in tests: a hook the server calls before serving a
 * file. A fault matches a URL path (exact string or RegExp) and is used `times` times (default: always).
 */

export type Fault =
  | { kind: 'status'; status: number }
  /** Sends the headers and the first `afterBytes` bytes, then never sends more (slow retrieval). */
  | { kind: 'stall'; afterBytes: number }
  /**
   * Sends the first `afterBytes` bytes, then destroys the connection (a cut download). Honours a
   * Range header (206 for that range, cut `afterBytes` into it), as a real server cut mid-range does.
   */
  | { kind: 'cut'; afterBytes: number }
  /** Serves these bytes instead of the file's own. */
  | { kind: 'replace'; body: Buffer | string }
  /** Serves the whole file with 200, ignoring any Range header (a server without range support). */
  | { kind: 'ignore-range' }
  /** Serves the file with one byte flipped at `offset` (honouring no Range). */
  | { kind: 'corrupt'; offset: number }
  /** Serves the file followed by `extraBytes` more bytes (endless data). */
  | { kind: 'append'; extraBytes: number };

export interface RequestRecord {
  method: string;
  path: string;
  status: number;
  bytes: number;
  /** The Range header the client sent, if any. */
  range: string | undefined;
}

/** Returned by the hook: true when the fault handled the request, false to serve the file normally. */
export type RequestHook = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export class FaultInjector {
  readonly requests: RequestRecord[] = [];
  readonly #root: string;
  readonly #faults: { match: string | RegExp; fault: Fault; left: number }[] = [];
  readonly #stalled = new Set<ServerResponse>();

  constructor(root: string) {
    this.#root = root;
  }

  add(match: string | RegExp, fault: Fault, times = Number.POSITIVE_INFINITY): void {
    this.#faults.push({ match, fault, left: times });
  }

  clear(): void {
    this.#faults.length = 0;
    for (const res of this.#stalled) res.destroy();
    this.#stalled.clear();
  }

  resetRequests(): void {
    this.requests.length = 0;
  }

  readonly hook: RequestHook = async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path,
      status: 200,
      bytes: 0,
      range: req.headers.range,
    };
    this.requests.push(record);
    const write = res.write.bind(res);
    res.write = ((chunk: Buffer | string, ...rest: never[]) => {
      record.bytes += Buffer.byteLength(chunk);
      return write(chunk, ...rest);
    }) as typeof res.write;
    res.on('finish', () => {
      record.status = res.statusCode;
    });

    const entry = this.#faults.find(
      (f) => f.left > 0 && (typeof f.match === 'string' ? f.match === path : f.match.test(path)),
    );
    if (!entry) return false;
    entry.left -= 1;
    const { fault } = entry;
    if (fault.kind === 'status') {
      record.status = fault.status;
      res.writeHead(fault.status).end();
      return true;
    }
    const file = await readFile(join(this.#root, normalize(path)));
    if (fault.kind === 'replace' || fault.kind === 'ignore-range' || fault.kind === 'corrupt') {
      const body = fault.kind === 'replace' ? Buffer.from(fault.body) : Buffer.from(file);
      if (fault.kind === 'corrupt') body[fault.offset] = (body[fault.offset] ?? 0) ^ 0xff;
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    } else if (fault.kind === 'append') {
      res.writeHead(200);
      res.write(file);
      res.end(Buffer.alloc(fault.extraBytes, 0x20));
    } else if (fault.kind === 'stall') {
      res.writeHead(200, { 'content-length': file.length });
      res.write(file.subarray(0, fault.afterBytes));
      this.#stalled.add(res);
    } else {
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      const start = range ? Number(range[1]) : 0;
      const end = range?.[2] ? Number(range[2]) + 1 : file.length;
      const body = file.subarray(start, end);
      res.writeHead(range ? 206 : 200, {
        'content-length': body.length,
        ...(range ? { 'content-range': `bytes ${start}-${end - 1}/${file.length}` } : {}),
      });
      res.write(body.subarray(0, fault.afterBytes), () => res.destroy());
    }
    return true;
  };
}

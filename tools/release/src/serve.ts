import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { generate } from 'selfsigned';

/*
 * Serves a repository's public folder as static files (Range requests and ETags included, which resumed
 * downloads rely on). HTTPS by default with a self-signed development certificate kept in the repository
 * (`tls/cert.pem`, which clients pass as their CA file); plain HTTP only when asked for explicitly.
 */

export interface ServeOptions {
  publicDir: string;
  host?: string;
  port?: number;
  /** PEM certificate and key; when absent a self-signed pair is generated into `tlsDir`. */
  tls?: { cert: string; key: string };
  tlsDir?: string;
  insecureHttp?: boolean;
  /** Called before the file is served; returns true when it answered the request itself (tests). */
  onRequest?: (
    req: import('node:http').IncomingMessage,
    res: import('node:http').ServerResponse,
  ) => Promise<boolean>;
}

export interface RunningServer {
  url: string;
  port: number;
  /** Path of the certificate clients should trust (undefined for plain HTTP). */
  caFile: string | undefined;
  close(): Promise<void>;
}

/** A self-signed certificate for localhost and 127.0.0.1, reused when already present. */
export async function ensureDevCertificate(
  tlsDir: string,
  hosts: string[] = [],
): Promise<{ cert: string; key: string; certFile: string }> {
  const certFile = join(tlsDir, 'cert.pem');
  const keyFile = join(tlsDir, 'key.pem');
  try {
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'), certFile };
  } catch {
    const names = ['localhost', ...hosts.filter((h) => !/^[\d.:]+$/.test(h))];
    const ips = ['127.0.0.1', '::1', ...hosts.filter((h) => /^[\d.:]+$/.test(h))];
    const pems = await generate([{ name: 'commonName', value: 'aico-release development server' }], {
      keyType: 'ec',
      notAfterDate: new Date(Date.now() + 825 * 86_400_000),
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: [
            ...names.map((value) => ({ type: 2 as const, value })),
            ...ips.map((ip) => ({ type: 7 as const, ip })),
          ],
        },
      ],
    });
    await mkdir(tlsDir, { recursive: true, mode: 0o700 });
    await writeFile(certFile, pems.cert);
    await writeFile(keyFile, pems.private, { mode: 0o600 });
    return { cert: pems.cert, key: pems.private, certFile };
  }
}

export async function serveRepository(options: ServeOptions): Promise<RunningServer> {
  const app = express();
  app.disable('x-powered-by');
  if (options.onRequest) {
    const hook = options.onRequest;
    app.use((req, res, next) => {
      hook(req, res).then((handled) => (handled ? undefined : next()), next);
    });
  }
  app.use(
    express.static(options.publicDir, { dotfiles: 'deny', index: false, fallthrough: true, maxAge: 0 }),
  );
  app.use((_req, res) => {
    res.status(404).end();
  });

  let server: Server;
  let caFile: string | undefined;
  if (options.insecureHttp) {
    server = createHttpServer(app);
  } else {
    let tls = options.tls;
    if (!tls) {
      const generated = await ensureDevCertificate(options.tlsDir ?? join(options.publicDir, '..', 'tls'), [
        options.host ?? '',
      ]);
      tls = generated;
      caFile = generated.certFile;
    }
    server = createHttpsServer({ cert: tls.cert, key: tls.key }, app);
  }
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return {
    url: `${options.insecureHttp ? 'http' : 'https'}://${urlHost}:${port}`,
    port,
    caFile,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Express, Response } from 'express';
import { controlGuard, type GuardOptions } from './control-guard.ts';

/*
 * The operator's page (page/: Preact, bundled by esbuild at build time) at `/`: three static files from
 * this origin, nothing from a CDN. The page itself holds no secret (it asks for the token and keeps it in
 * the tab's session), so it needs no token; it gets the control API's Host and Origin checks and rate
 * limit, and a Content-Security-Policy that lets it load and talk to this origin only.
 */

/** Where the built page is, beside the gateway's code (services/bus-gateway/page/dist). */
export const PAGE_DIR = join(import.meta.dirname, '..', 'page', 'dist');

const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

const POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export function operatorPage(options: { dir: string; guard: GuardOptions }): (app: Express) => void {
  // The rate limit and the Host/Origin checks of the control API; not its token.
  const [limit, hosts] = controlGuard(options.guard);
  const send = async (res: Response, file: string) => {
    const path = join(options.dir, file);
    if (
      !(await access(path).then(
        () => true,
        () => false,
      ))
    ) {
      res
        .status(503)
        .type('text/plain')
        .send(
          'The operator page is not built: run `node services/bus-gateway/page/build.ts` (scripts/setup.sh does).',
        );
      return;
    }
    res.set({
      'content-security-policy': POLICY,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-cache',
    });
    res.type(FILES[file] as string).sendFile(path);
  };
  return (app) => {
    app.get('/', limit as never, hosts as never, (_req, res) => void send(res, 'index.html'));
    app.get('/assets/:file', limit as never, hosts as never, (req, res) => {
      const file = String(req.params.file);
      if (!(file in FILES) || file === 'index.html') {
        res.status(404).type('text/plain').send('not found');
        return;
      }
      void send(res, file);
    });
  };
}

/*
 * Builds the operator's page: src/main.tsx (Preact) bundled and minified by esbuild into dist/app.js,
 * its CSS into dist/app.css, and index.html beside them. Nothing is fetched from elsewhere at run time.
 * Prints what the bundle weighs (raw and gzip).
 *   node services/bus-gateway/page/build.ts
 */
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const here = import.meta.dirname;
const dist = join(here, 'dist');
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: { app: join(here, 'src', 'main.tsx') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: dist,
  legalComments: 'none',
  logLevel: 'warning',
});
await copyFile(join(here, 'index.html'), join(dist, 'index.html'));
for (const file of ['app.js', 'app.css']) {
  const bytes = await readFile(join(dist, file));
  console.log(`page ${file}: ${bytes.length} bytes, ${gzipSync(bytes).length} gzip`);
}

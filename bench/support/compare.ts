/*
 * Diagnostics for bench:download (node bench/support/compare.ts): curl, a bare node:https
 * read+hash+write loop (with variants), and our download path, against one server, 512 MiB each.
 * It separates what the transport costs from what our own path adds.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestRepository } from '@aico-update/release/testing';
import { compileWorkspace, composeNodeFlags } from './compiled.ts';

const run = promisify(execFile);
const t = await startTestRepository();
const file = `${t.workDir}/big.bin`;
const stream = createWriteStream(file);
const chunk = Buffer.alloc(1 << 20, 7);
for (let i = 0; i < 512; i++)
  if (!stream.write(chunk)) await new Promise<void>((r) => stream.once('drain', () => r()));
await new Promise<void>((r) => stream.end(() => r()));
await t.repo.addRelease({ component: 'backend', version: '1.0.0', channel: 'stable', artifacts: [file] });
const sha = (await t.repo.readTargets()).targets['artifacts/backend/1.0.0/big.bin']?.hashes.sha256;
const url = `${t.targetsUrl}/artifacts/backend/1.0.0/${sha}.big.bin`;
const bare = `
import { createHash } from 'node:crypto'; import { createWriteStream, readFileSync } from 'node:fs'; import { Agent, get } from 'node:https';
const [url, ca, dest] = process.argv.slice(1);
const agent = new Agent({ ca: readFileSync(ca, 'utf8'), keepAlive: true });
const t0 = performance.now();
const res = await new Promise((ok, no) => get(url, { agent }, ok).on('error', no));
const hash = createHash('sha256'); const out = createWriteStream(dest, { highWaterMark: 4 << 20 });
for await (const c of res) { hash.update(c); if (!out.write(c)) await new Promise((r) => out.once('drain', r)); }
await new Promise((r) => out.end(r)); const cpu = process.cpuUsage(); console.log((performance.now() - t0).toFixed(0) + ' (cpu ' + ((cpu.user + cpu.system) / 1000).toFixed(0) + ')'); agent.destroy();`;
const child = resolve(import.meta.dirname, 'download-child.ts');
const variant = (agentOpts: string, perChunk: string, reqOpts = '') =>
  bare
    .replace(
      "{ ca: readFileSync(ca, 'utf8'), keepAlive: true }",
      `{ ca: readFileSync(ca, 'utf8'), keepAlive: true${agentOpts} }`,
    )
    .replace('get(url, { agent }, ok).on', `get(url, { agent }, ok)${reqOpts}.on`)
    .replace('hash.update(c);', `${perChunk} hash.update(c);`);
for (const [name, v] of [
  ['bare', bare],
  ['+proxyEnv', variant(', proxyEnv: { ...process.env }', '')],
  ['+await undefined', variant('', 'await undefined;')],
  ['+setTimeout', variant('', '', '.setTimeout(30000, () => {})')],
  ['+our modules loaded', `await import('@aico-update/tuf-client');\n${bare}`],
] as const) {
  const b = await run(process.execPath, [
    '--input-type=module',
    '-e',
    v,
    url,
    t.caFile,
    join(t.workDir, 'b.bin'),
  ]);
  const b2 = await run(process.execPath, [
    '--input-type=module',
    '-e',
    v,
    url,
    t.caFile,
    join(t.workDir, 'b.bin'),
  ]);
  console.log(name, b.stdout.trim(), '/', b2.stdout.trim(), 'ms');
}
// Our download as the service runs it: compiled, with the downloader's Node flags from docker-compose.yml.
const compiled = await compileWorkspace(join(t.workDir, 'compiled'));
const compiledChild = await compiled.addScript(child);
const flags = await composeNodeFlags('downloader');
const runs: string[] = [];
for (let i = 0; i < 2; i++) {
  const o = await run(process.execPath, [
    ...flags,
    compiledChild,
    t.metadataUrl,
    t.targetsUrl,
    t.caFile,
    t.repo.trustedRootPath,
    join(t.workDir, `sx${i}`),
    'artifacts/backend/1.0.0/big.bin',
    join(t.workDir, 'x.bin'),
  ]);
  const r = JSON.parse(o.stdout);
  runs.push(`${r.ms.toFixed(0)} ms (cpu ${r.cpuMs.toFixed(0)}, rss ${r.maxRssMiB.toFixed(0)})`);
}
console.log(`ours ${flags.join(' ')}: ${runs.join(' / ')}`);
await t.close();

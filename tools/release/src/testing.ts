import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FaultInjector, makeTempDir } from '@aico-update/shared/testing';
import { type AddReleaseInput, type InitOptions, initRepository, type Repository } from './repository.ts';
import { type RunningServer, serveRepository } from './serve.ts';

/*
 * A real TUF repository served over real HTTPS for tests, with fault injection on the serving path.
 * Tests act as the publisher (repo.addRelease, refresh, rotate) and as the attacker (faults, or files
 * rewritten on disk), against the same client code the services run.
 */
export interface TestRepository {
  repo: Repository;
  server: RunningServer;
  faults: FaultInjector;
  metadataUrl: string;
  targetsUrl: string;
  caFile: string;
  /** A folder for client state and artifacts, removed by close(). */
  workDir: string;
  /** Publishes a release with one generated artifact of `size` bytes. */
  publish(input: Omit<AddReleaseInput, 'artifacts'> & { size?: number }): Promise<void>;
  close(): Promise<void>;
}

export async function startTestRepository(options: InitOptions = {}): Promise<TestRepository> {
  const workDir = await makeTempDir('tuf-repo');
  const repo = await initRepository(join(workDir, 'repo'), options);
  const faults = new FaultInjector(repo.publicDir);
  const server = await serveRepository({
    publicDir: repo.publicDir,
    tlsDir: join(workDir, 'tls'),
    onRequest: faults.hook,
  });
  return {
    repo,
    server,
    faults,
    metadataUrl: `${server.url}/metadata`,
    targetsUrl: `${server.url}/targets`,
    caFile: server.caFile as string,
    workDir,
    async publish({ size = 64, ...input }) {
      const artifact = join(workDir, `${input.component}-${input.version}.bin`);
      await writeFile(artifact, Buffer.alloc(size, input.version));
      await repo.addRelease({ ...input, artifacts: [artifact] });
    },
    async close() {
      faults.clear();
      await server.close();
      await rm(workDir, { recursive: true, force: true });
    },
  };
}

import { dirname } from 'node:path';
import { createLogger } from '@aico-update/shared';
import { DockerRuntime } from '../adapters/docker-runtime.ts';
import { IntentStore } from './intent.ts';
import { runSelfUpdate } from './swap.ts';

/*
 * The self-update helper: a short-lived container the installer starts from the NEW installer image,
 * with the Docker socket and the installer's state volume and nothing else (no network, no capability
 * but reading the volume). It swaps the update system's services as the intent says and writes the
 * outcome into it; the installer that runs afterwards reports it and removes this container. Docker
 * restarts it when it crashes (restart policy on-failure); a restarted helper puts everything back.
 *
 *   node services/installer/src/self-update/helper.js /var/lib/aico-update/installer/self-update.json [docker socket]
 */

export async function runHelper(intentFile: string, socketPath: string): Promise<number> {
  const logger = createLogger('self-update-helper', process.env.AICO_LOG_LEVEL || 'info');
  const store = new IntentStore(dirname(intentFile), logger);
  const intent = await store.read();
  if (!intent) {
    logger.error({ file: intentFile }, 'no valid self-update intent: nothing to do');
    return 2;
  }
  const done = await runSelfUpdate(new DockerRuntime(socketPath), store, intent, logger);
  logger.info({ outcome: done.outcome }, `self-update ${done.outcome?.result}: ${done.outcome?.reason}`);
  return 0;
}

if (import.meta.main) {
  const [intentFile, socketPath = '/var/run/docker.sock'] = process.argv.slice(2);
  if (!intentFile) {
    console.error('usage: helper.js INTENT_FILE [DOCKER_SOCKET]');
    process.exit(2);
  }
  process.exitCode = await runHelper(intentFile, socketPath);
}

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { keptSecret, parseJsonOrUndefined, writeFileAtomic } from '@aico-update/shared';
import { curveKeyPair } from 'zeromq';
import { AICO_BROKER_SECRET_KEY } from './config.ts';

/*
 * The broker's CURVE key pair, when the gateway is AICO's broker. AICO publishes its default broker key
 * pair in its source: a broker using it authenticates itself to nobody (anyone can impersonate it). So
 * unless the operator configured another, the gateway makes its own on first start and keeps it on its
 * volume; the public key frontends need is in `broker-public-key` beside it. The gateway's own client key
 * pair (its heartbeat through the broker) is kept the same way, so the allow-list can name it.
 */

export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

async function storedPair(file: string): Promise<KeyPair> {
  const { value } = await keptSecret(file, {
    parse: (text) => {
      const pair = parseJsonOrUndefined(text) as Partial<KeyPair> | undefined;
      return pair?.publicKey?.length === 40 && pair.secretKey?.length === 40
        ? { publicKey: pair.publicKey, secretKey: pair.secretKey }
        : undefined;
    },
    make: () => {
      const pair = curveKeyPair();
      return { value: pair, text: JSON.stringify(pair) };
    },
  });
  return value;
}

export async function brokerKeys(
  configured: KeyPair,
  stateDir: string,
): Promise<{ server: KeyPair; client: KeyPair; generated: boolean; publicKeyFile: string }> {
  await mkdir(stateDir, { recursive: true });
  const publicKeyFile = join(stateDir, 'broker-public-key');
  const generated = configured.secretKey === AICO_BROKER_SECRET_KEY;
  const server = generated ? await storedPair(join(stateDir, 'broker-curve.json')) : configured;
  await writeFileAtomic(publicKeyFile, `${server.publicKey}\n`, 0o644);
  const client = await storedPair(join(stateDir, 'gateway-client-curve.json'));
  return { server, client, generated, publicKeyFile };
}

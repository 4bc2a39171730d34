import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalize } from '@tufjs/canonical-json';
import { Signature } from '@tufjs/models';

/** A signing key as stored on disk (mode 0600): the TUF public key object plus the private key PEM. */
export interface KeyFile {
  keyid: string;
  keytype: 'ed25519';
  scheme: 'ed25519';
  keyval: { public: string };
  private_pem: string;
}

/** The public half as TUF's root metadata lists it. */
export function publicKeyJson(key: KeyFile) {
  return { keytype: key.keytype, scheme: key.scheme, keyval: key.keyval };
}

export function generateKey(): KeyFile {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url');
  const pub = {
    keytype: 'ed25519' as const,
    scheme: 'ed25519' as const,
    keyval: { public: raw.toString('hex') },
  };
  // keyid = sha256 of the canonical JSON of the public key object (TUF specification §4.2).
  const keyid = createHash('sha256').update(canonicalize(pub)).digest('hex');
  return { keyid, ...pub, private_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** The callback `Metadata.sign` takes: ed25519 over the canonical bytes of the signed part. */
export function signerFor(key: KeyFile): (data: Buffer) => Signature {
  const privateKey = createPrivateKey(key.private_pem);
  return (data) => new Signature({ keyID: key.keyid, sig: sign(null, data, privateKey).toString('hex') });
}

/** Every key file in the given folders (missing folders are skipped), by keyid. */
export async function loadKeys(dirs: readonly string[]): Promise<Map<string, KeyFile>> {
  const keys = new Map<string, KeyFile>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      const key = JSON.parse(await readFile(join(dir, name), 'utf8')) as KeyFile;
      if (key.keyid && key.private_pem) keys.set(key.keyid, key);
    }
  }
  return keys;
}

import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { buildAppImage, docker, ensureBaseImage, makeTempDir, testTag } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readImageArchive, writeImageArchive } from '../../src/index.ts';

let dir: string;
const base = 'aico-test/base:archive';
const tag = testTag('aico-test/app', 'archive-1.0.0');

beforeAll(async () => {
  dir = await makeTempDir('image-archive');
  await ensureBaseImage(base, 2 * 1024 * 1024);
});

afterAll(async () => {
  await docker('rmi', '-f', tag).catch(() => undefined);
});

describe('image archives on the real Docker Engine', () => {
  it('splits docker save output into content-addressed blobs and assembles a loadable archive with the same id', async () => {
    const id = await buildAppImage(base, tag, '1.0.0', 64 * 1024);
    await docker('save', '-o', join(dir, 'saved.tar'), tag);

    const [image] = await readImageArchive(join(dir, 'saved.tar'), join(dir, 'blobs'));
    expect(image?.imageId).toBe(id);
    expect(image?.repoTags).toEqual([tag]);
    expect(image?.layers).toHaveLength(2);
    for (const blob of [image!.config, ...image!.layers]) {
      expect(blob.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect((await stat(blob.file)).size).toBe(blob.length);
    }

    await writeImageArchive(image!, join(dir, 'assembled.tar'));
    await docker('rmi', '-f', tag);
    await expect(docker('image', 'inspect', tag)).rejects.toThrow();
    await docker('load', '-i', join(dir, 'assembled.tar'));
    expect(await docker('image', 'inspect', '--format', '{{.Id}}', tag)).toBe(id);
  });

  it('says what is wrong with a file that is not an image archive', async () => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'not.tar'), 'hello');
    await expect(readImageArchive(join(dir, 'not.tar'), join(dir, 'x'))).rejects.toThrow(
      /no manifest.json|not a readable image archive/,
    );
  });
});

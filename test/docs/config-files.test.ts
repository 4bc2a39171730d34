import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadConfig } from '@aico-update/shared';
import { makeTempDir } from '@aico-update/shared/testing';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { gatewayConfigSchema } from '../../services/bus-gateway/src/config.ts';
import { checkerConfigSchema } from '../../services/checker/src/config.ts';
import { downloaderConfigSchema } from '../../services/downloader/src/config.ts';
import { installerConfigSchema } from '../../services/installer/src/config.ts';

/*
 * The config files the compose deployment mounts (config/<service>.yml): each parses as shipped, and
 * its commented example, uncommented, is a valid configuration of that service (so an operator who
 * copies it gets a working file), while a key of another service stops it, naming the key.
 */

const root = resolve(import.meta.dirname, '../..');
const schemas: Record<string, z.ZodType> = {
  checker: checkerConfigSchema,
  downloader: downloaderConfigSchema,
  installer: installerConfigSchema,
  'bus-gateway': gatewayConfigSchema,
};
const env = { AICO_UPDATE_SERVER_METADATA_URL: 'https://updates.example.org/metadata' };

/** The example: the lines after the first bare `#`, with their `# ` taken off. */
function uncommented(text: string): string {
  const lines = text.split('\n');
  const start = lines.indexOf('#');
  return lines
    .slice(start + 1)
    .map((line) => line.replace(/^# ?/, ''))
    .join('\n');
}

describe('the compose deployment’s config files', () => {
  it.each(Object.keys(schemas))(
    'config/%s.yml parses as shipped, and so does its example',
    async (service) => {
      const file = join(root, 'config', `${service}.yml`);
      const schema = schemas[service] as z.ZodType;
      expect(() => loadConfig(schema, { file, env })).not.toThrow();
      const example = join(await makeTempDir('config-example'), 'config.yml');
      const text = uncommented(await readFile(file, 'utf8'));
      expect(text.trim().length).toBeGreaterThan(10);
      await writeFile(example, text);
      expect(() => loadConfig(schema, { file: example, env })).not.toThrow();
    },
  );

  it('is mounted into each service, which is told where it is', async () => {
    const compose = await readFile(join(root, 'docker-compose.yml'), 'utf8');
    for (const service of Object.keys(schemas)) {
      expect(compose).toContain(
        `\${AICO_CONFIG_DIR:-./config}/${service}.yml:/etc/aico-update/config.yml:ro`,
      );
    }
    expect(compose).toContain('AICO_CONFIG_FILE: /etc/aico-update/config.yml');
  });

  it('refuses a key of another service, naming it', async () => {
    const file = join(await makeTempDir('config-foreign'), 'config.yml');
    await writeFile(file, 'installer:\n  soak_seconds: 5\n');
    expect(() => loadConfig(checkerConfigSchema, { file, env })).toThrow(/unknown key "installer"/);
  });
});

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { checkerConfigSchema } from '@aico-update/checker';
import { describeSettings } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';

const readme = await readFile(resolve(import.meta.dirname, '../../README.md'), 'utf8');

describe('README', () => {
  it('documents every configuration key with its environment variable', () => {
    const missing = describeSettings(checkerConfigSchema).filter(
      (s) => !readme.includes(`\`${s.key}\``) || !readme.includes(`\`${s.env}\``),
    );
    expect(missing.map((s) => s.key)).toEqual([]);
  });

  it('has a quick start of exactly the two commands', () => {
    expect(readme).toContain('bash scripts/demo');
    expect(readme).toContain('bash scripts/test');
  });
});

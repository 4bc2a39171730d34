import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allSettings } from '../../scripts/config-reference.ts';

const readme = await readFile(resolve(import.meta.dirname, '../../README.md'), 'utf8');

describe('README', () => {
  it('documents every configuration key with its environment variable', () => {
    const missing = allSettings().filter(
      (s) => !readme.includes(`\`${s.key}\``) || !readme.includes(`\`${s.env}\``),
    );
    expect(missing.map((s) => s.key)).toEqual([]);
  });

  it('has a quick start of exactly the two commands', () => {
    expect(readme).toContain('bash scripts/demo');
    expect(readme).toContain('bash scripts/test');
  });
});

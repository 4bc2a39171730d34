import { LengthOrHashMismatchError, UnsignedMetadataError } from '@tufjs/models/dist/error.js';
import {
  BadVersionError,
  DownloadLengthMismatchError,
  ExpiredMetadataError,
  RuntimeError,
} from 'tuf-js/dist/error.js';
import { describe, expect, it } from 'vitest';
import { classifyTufError, FetchError } from '../../src/index.ts';

describe('classifyTufError', () => {
  it.each([
    [new UnsignedMetadataError('timestamp was signed by 0/1 keys'), 'attack', 'TUF_BAD_SIGNATURE'],
    [new BadVersionError('New timestamp version 1 is less than current version 2'), 'attack', 'TUF_ROLLBACK'],
    [new ExpiredMetadataError('Final timestamp.json is expired'), 'expired', 'TUF_EXPIRED'],
    [new DownloadLengthMismatchError('Max length reached'), 'attack', 'TUF_ENDLESS_DATA'],
    [new LengthOrHashMismatchError('Expected hash abc but got def'), 'attack', 'TUF_HASH_MISMATCH'],
    [new LengthOrHashMismatchError('Expected length 10 but got 12'), 'attack', 'TUF_LENGTH_MISMATCH'],
    // What survives of failures tuf-js wraps while loading snapshot and targets: the message.
    [
      new RuntimeError('Unable to load snapshot metadata error Error: Expected hash 1 but got 2'),
      'attack',
      'TUF_HASH_MISMATCH',
    ],
    [
      new RuntimeError('Unable to load targets error Error: targets was signed by 1/2 keys'),
      'attack',
      'TUF_BAD_SIGNATURE',
    ],
    [
      new RuntimeError('Unable to load targets error Error: targets.json is expired'),
      'expired',
      'TUF_EXPIRED',
    ],
    [
      new RuntimeError('Unable to load snapshot metadata error Error: Max length reached'),
      'attack',
      'TUF_ENDLESS_DATA',
    ],
    // A 404 for snapshot or targets, a wrong _type, a root whose version differs from its URL's.
    [
      new RuntimeError(
        'Unable to load snapshot metadata error Error: https://u/metadata/3.snapshot.json: HTTP 404',
      ),
      'unreachable',
      'TUF_NOT_FOUND',
    ],
    [
      new RuntimeError('Unable to load targets error Error: https://u/metadata/2.targets.json: HTTP 403'),
      'unreachable',
      'TUF_NOT_FOUND',
    ],
    [
      new RuntimeError("Unable to load snapshot metadata error ValueError: expected 'snapshot', got targets"),
      'attack',
      'TUF_WRONG_TYPE',
    ],
    [new Error("Expected 'timestamp', got snapshot"), 'attack', 'TUF_WRONG_TYPE'],
    [new BadVersionError('Expected version 2, got 3'), 'attack', 'TUF_VERSION_MISMATCH'],
    [new BadVersionError('Expected version 3, got 2'), 'attack', 'TUF_ROLLBACK'],
    [
      new RuntimeError(
        'Unable to load targets error Error: Version 3 of targets does not match snapshot version 4',
      ),
      'attack',
      'TUF_MIX_AND_MATCH',
    ],
    [new RuntimeError('something nobody expected'), 'internal', 'TUF_INTERNAL'],
  ])('%s → %s/%s', (error, kind, code) => {
    expect(classifyTufError(error)).toMatchObject({ kind, code });
  });

  it('recovers a transport failure that tuf-js wrapped into a message, from the fetcher record', () => {
    const transport = new FetchError(
      'TUF_SLOW_RETRIEVAL',
      'no data within the idle timeout',
      'https://x/1.snapshot.json',
      true,
    );
    const wrapped = new RuntimeError(
      `Unable to load snapshot metadata error FetchError: ${transport.message}`,
    );
    expect(classifyTufError(wrapped, transport)).toMatchObject({
      kind: 'unreachable',
      code: 'TUF_SLOW_RETRIEVAL',
    });
  });

  it('tells an operator what to do about an attack', () => {
    const error = classifyTufError(
      new BadVersionError('New snapshot version 1 is less than current version 5'),
    );
    expect(error.message).toMatch(
      /rollback.*Nothing was installed and the previously trusted metadata is kept/,
    );
  });
});

import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The few files that take most of the suite's time start first, longest first: on a fresh clone vitest
 * has no durations and orders by file size, which started the deploy self-update test (a third of the
 * suite, one file, one worker) minutes late. The installer's helper test runs beside it while the
 * service images are built once, so the deploy stacks after it find them in the build cache.
 * Everything else keeps vitest's order (failed first, then by duration or size).
 */
const FIRST = [
  'test/deploy/self-update.test.ts',
  'services/installer/test/integration/self-update.test.ts',
  'test/deploy/stack.test.ts',
  'test/deploy/upgrade.test.ts',
];

const rank = (file: TestSpecification) => {
  const index = FIRST.findIndex((path) => file.moduleId.endsWith(path));
  return index === -1 ? FIRST.length : index;
};

export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    // toSorted is stable: files of one rank keep vitest's order.
    return (await super.sort(files)).toSorted((a, b) => rank(a) - rank(b));
  }
}

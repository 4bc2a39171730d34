import { defineConfig } from 'vitest/config';
import LongestFirst from './test/sequencer.ts';

// Two projects: unit (pure logic, in-memory fakes, fast) and integration (real Redis, NATS, HTTPS, Docker).
// Integration suites spawn their own servers on free ports, so files may run in parallel; two cores
// here, so at most two at a time.
export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{libs,services,tools}/*/test/unit/**/*.test.ts'],
          testTimeout: 5_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['{libs,services,tools}/*/test/integration/**/*.test.ts', 'test/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});

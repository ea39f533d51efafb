// The main suite. The Docker tier (test/docker/) runs after it, alone: ava.docker.config.mjs.
export const shared = {
  extensions: ['ts'],
  nodeArguments: ['--import=tsx'],
  timeout: '10m',
  workerThreads: false,
  require: ['./testkit/exit-guard.ts'],
};

/**
 * The files that take minutes start first, so that the two workers stay busy to the end
 * instead of one waiting on a long file that started last (the topology runner alone
 * takes ~12 of the suite's minutes). The rest keep ava's order.
 */
const LONG_FILES = ['test/topologies/runner.test.ts', 'test/ui/browser.test.ts', 'test/proxy/region-return.test.ts'];
const rank = (file) => {
  const i = LONG_FILES.findIndex((long) => file.endsWith(long));
  return i === -1 ? LONG_FILES.length : i;
};

export default {
  ...shared,
  files: ['test/**/*.test.ts', '!test/docker/**'],
  concurrency: 2,
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b),
};

// The main suite. The Docker tier (test/docker/) runs after it, alone: ava.docker.config.mjs.
export const shared = {
  extensions: ['ts'],
  nodeArguments: ['--import=tsx'],
  timeout: '10m',
  workerThreads: false,
  require: ['./testkit/exit-guard.ts'],
};

export default { ...shared, files: ['test/**/*.test.ts', '!test/docker/**'], concurrency: 2 };

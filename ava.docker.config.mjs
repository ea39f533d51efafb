// The Docker tier: its own dockerd, image builds and containers. `npm test` runs it after
// the main suite, one file at a time, so its load never overlaps the timing-sensitive tests.
import { shared } from './ava.config.mjs';

export default { ...shared, files: ['test/docker/**/*.test.ts'], concurrency: 1 };

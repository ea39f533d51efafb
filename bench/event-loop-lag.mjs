/**
 * `node --import ./bench/event-loop-lag.mjs …`: reports the process's event-loop stalls.
 * A 2 ms interval timer that fires later than CAUSEWAY_BENCH_LAG_MS (default 10) past its
 * due time prints `LAG <epoch ms when it fired> <ms late>` on stdout, to line up with
 * bench/mesh.ts's per-request timelines (CAUSEWAY_BENCH_LOG_DIR). bench/mesh.ts loads it
 * into every hop process when CAUSEWAY_BENCH_LAG_MS is set. The timer costs a little CPU
 * (500 wake-ups a second): not for CPU measurements.
 */
const threshold = Number(process.env.CAUSEWAY_BENCH_LAG_MS ?? 10);
const PERIOD_MS = 2;
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  const late = now - last - PERIOD_MS;
  if (late > threshold) process.stdout.write(`LAG ${(performance.timeOrigin + now).toFixed(1)} ${late.toFixed(1)}\n`);
  last = now;
}, PERIOD_MS).unref();

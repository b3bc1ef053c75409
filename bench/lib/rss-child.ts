/**
 * Child process of bench/io.ts: resident-memory growth while buildModel streams a checkpoint into a tfjs
 * backend, measured in a fresh process so nothing else has touched the heap.
 *
 * Baseline = RSS after the backend is initialised and a full GC has run. During buildModel the RSS is polled
 * every POLL_MS ms; the kernel's own peak (VmHWM, reset to the baseline through /proc/self/clear_refs first)
 * catches what polling misses while the event loop is blocked.
 * Usage: node --import tsx bench/lib/rss-child.ts <dir> <step> <wasm|cpu>
 * Prints one JSON line.
 */
import { initBackend, type BackendChoice } from '../../model/backend';
import { buildModel } from '../../model/build';
import { fullGc, procMemory, resetPeakRss } from './system';

const POLL_MS = 2;

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  const step = Number(process.argv[3]);
  const backend = process.argv[4] as BackendChoice;
  const { tf } = await initBackend({ force: backend, log: () => undefined });
  tf.tidy(() => tf.add(tf.ones([4]), tf.ones([4])).dataSync()); // first kernel run: lazy backend setup
  fullGc();
  await new Promise((r) => setTimeout(r, 50));
  fullGc();

  const before = process.memoryUsage().rss;
  const hwmReset = resetPeakRss();
  const hwmBefore = procMemory()?.hwm ?? NaN;
  let peak = before;
  let samples = 0;
  const timer = setInterval(() => {
    const rss = process.memoryUsage().rss;
    samples++;
    if (rss > peak) peak = rss;
  }, POLL_MS);
  const t0 = performance.now();
  const built = await buildModel(dir, step, { backend });
  const ms = performance.now() - t0;
  clearInterval(timer);
  const end = process.memoryUsage().rss;
  peak = Math.max(peak, end);
  const hwmAfter = procMemory()?.hwm ?? NaN;
  fullGc();
  await new Promise((r) => setTimeout(r, 50));
  const settled = process.memoryUsage().rss;
  const params = built.model.numParams();
  built.model.dispose();

  const result = {
    backend,
    params,
    modelBytes: params * 4,
    buildMs: ms,
    rssBefore: before,
    peakSampled: peak,
    samples,
    hwmReset,
    hwmBefore,
    hwmAfter,
    rssEnd: end,
    rssSettled: settled,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

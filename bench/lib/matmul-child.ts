/**
 * Child process of bench/native.ts: the FLOP rate of one large float32 matmul (n x n by n x n) on one backend,
 * in a fresh process: the peak that model FLOPs utilisation is measured against.
 * Usage: node --import tsx bench/lib/matmul-child.ts <backend> <n> <reps>
 * Prints one JSON line: GFLOP/s of the best and the median rep (2 n^3 FLOPs each).
 */
import { initBackend, type BackendChoice } from '../../model/backend';
import { median } from './stats';

async function main(): Promise<void> {
  const backend = process.argv[2] as BackendChoice;
  const n = Number(process.argv[3] ?? 1024);
  const reps = Number(process.argv[4] ?? 5);
  const { tf } = await initBackend({ force: backend, log: () => undefined });
  const a = tf.randomUniform([n, n], -1, 1, 'float32', 1);
  const b = tf.randomUniform([n, n], -1, 1, 'float32', 2);
  const seconds: number[] = [];
  for (let r = 0; r < reps + 1; r++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    if (r > 0) seconds.push((performance.now() - t0) / 1000);
  }
  const gflop = (2 * n ** 3) / 1e9;
  const result = {
    backend,
    n,
    reps,
    bestGflops: gflop / Math.min(...seconds),
    medianGflops: gflop / median(seconds),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

/**
 * Where one training step's time goes on a backend: tfjs's profiler over one step (after two warm-up steps),
 * kernel time summed by kernel, against the step's wall time (the difference is dispatch and bookkeeping).
 * Usage: npx tsx bench/step-profile.ts [backend] [config JSON] [batch]
 *   e.g. npx tsx bench/step-profile.ts tensorflow '{"n_layer":4,"n_embd":256,"sequence_len":256}' 8
 */
import { AdamW } from '../model/adamw';
import { initBackend, type BackendChoice } from '../model/backend';
import { DEFAULT_CONFIG, GPT, normalizeConfig } from '../model/gpt';
import { fmt, markdownTable } from './lib/stats';

async function main(): Promise<void> {
  const backend = (process.argv[2] ?? 'tensorflow') as BackendChoice;
  const config = normalizeConfig(process.argv[3] ? JSON.parse(process.argv[3]) : DEFAULT_CONFIG);
  const batch = Number(process.argv[4] ?? 8);
  const { tf } = await initBackend({ force: backend, log: () => undefined });
  const T = config.sequence_len;
  const model = GPT.initialize(tf, config, 0);
  const optimizer = new AdamW(tf, model.parameters());
  const tokens = tf.tensor2d(
    new Int32Array(batch * T).map((_, i) => (i * 7919 + 13) % 256),
    [batch, T],
    'int32',
  );
  const step = () => {
    const { loss, grads } = model.lossAndGrads(tokens, tokens);
    optimizer.apply(grads, 1e-3);
    loss.dataSync();
    tf.dispose([loss, ...grads.values()]);
  };
  step();
  step();
  const t0 = performance.now();
  step();
  const wallMs = performance.now() - t0;
  const profile = await tf.profile(() => {
    step();
    return tf.scalar(0);
  });
  const byKernel = new Map<string, { ms: number; calls: number }>();
  for (const k of profile.kernels) {
    const entry = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    entry.ms += Number(k.kernelTimeMs) || 0;
    entry.calls++;
    byKernel.set(k.name, entry);
  }
  const kernelMs = [...byKernel.values()].reduce((sum, e) => sum + e.ms, 0);
  console.log(
    `${backend}: n_layer ${config.n_layer}, n_embd ${config.n_embd}, seq ${T}, batch ${batch}: step ${fmt(wallMs, 0)} ms ` +
      `wall, ${profile.kernels.length} kernels, ${fmt(kernelMs, 0)} ms in kernels\n`,
  );
  const rows = [...byKernel]
    .sort((a, b) => b[1].ms - a[1].ms)
    .slice(0, 12)
    .map(([name, e]) => [name, fmt(e.ms, 1), `${e.calls}`, `${fmt((100 * e.ms) / kernelMs, 1)} %`]);
  console.log(markdownTable(['kernel', 'ms', 'calls', 'share of kernel time'], rows));
  optimizer.dispose();
  model.dispose();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

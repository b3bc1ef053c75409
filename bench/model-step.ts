/**
 * ms per training step (forward, backward, AdamW update, loss read back) of the default demo model.
 * Both backends compute on one thread, so process CPU time per step is close to the wall time an idle machine
 * would show; it is printed too because wall time is inflated when other work shares the cores.
 * Usage: npx tsx bench/model-step.ts [backend,...] [steps] [batch]   e.g. `wasm,cpu 20 8`
 */
import { AdamW } from '../model/adamw';
import { initBackend, type BackendChoice } from '../model/backend';
import { DEFAULT_CONFIG, GPT, modelTag, normalizeConfig } from '../model/gpt';

async function main(): Promise<void> {
  const backends = (process.argv[2] ?? 'wasm,cpu').split(',') as BackendChoice[];
  const steps = Number(process.argv[3] ?? 20);
  const batch = Number(process.argv[4] ?? 8);
  const config = normalizeConfig(DEFAULT_CONFIG);
  const T = config.sequence_len;
  for (const backend of backends) {
    const { tf } = await initBackend({ force: backend, log: () => undefined });
    const model = GPT.initialize(tf, config, 0);
    const opt = new AdamW(tf, model.parameters());
    const ids = new Int32Array(batch * (T + 1)).map((_, i) => (i * 7919) % 256);
    const x = tf.tensor2d(ids.subarray(0, batch * T), [batch, T], 'int32');
    const y = tf.tensor2d(ids.subarray(batch, batch + batch * T), [batch, T], 'int32');
    const times: number[] = [];
    let cpuMs = 0;
    let last = NaN;
    for (let s = 0; s < steps + 3; s++) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const { loss, grads } = model.lossAndGrads(x, y);
      opt.apply(grads, 1e-3);
      last = loss.dataSync()[0]!;
      tf.dispose([loss, ...grads.values()]);
      if (s < 3) continue; // the first steps compile kernels and fill caches
      times.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpuMs += (c.user + c.system) / 1000;
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    console.log(
      `${backend}: ${modelTag(config)} n_embd=${config.n_embd} seq=${T} batch=${batch} params=${model.numParams()}` +
        ` wall median ${median.toFixed(1)} ms/step (mean ${mean.toFixed(1)}), process CPU ${(cpuMs / steps).toFixed(1)}` +
        ` ms/step over ${steps} steps (loss ${last.toFixed(3)})`,
    );
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

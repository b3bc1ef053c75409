/**
 * Child process of bench/io.ts and bench/native.ts: ms per training step of a GPT (default: the demo model)
 * on one backend, in a fresh process. A step is what train/trainer.ts does: token tensors in,
 * model.lossAndGrads, optimizer.apply, loss read back.
 * Usage: node --import tsx bench/lib/step-child.ts <backend> <warmup> <steps> <batch> [config JSON] [dump dir]
 * With a dump dir, the initial weights (init.safetensors) and the batch (batch.json) are written there first,
 * so another implementation can run the same step from the same state (bench/python/gpt_step.py).
 * Prints one JSON line.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors } from '../../checkpoint/safetensors-format';
import { AdamW } from '../../model/adamw';
import { initBackend, type BackendChoice } from '../../model/backend';
import { DEFAULT_CONFIG, GPT, normalizeConfig } from '../../model/gpt';
import { median } from './stats';

async function main(): Promise<void> {
  const backend = process.argv[2] as BackendChoice;
  const warmup = Number(process.argv[3] ?? 5);
  const steps = Number(process.argv[4] ?? 25);
  const batch = Number(process.argv[5] ?? 8);
  const { tf } = await initBackend({ force: backend, log: () => undefined });
  const config = normalizeConfig(process.argv[6] ? JSON.parse(process.argv[6]) : DEFAULT_CONFIG);
  const dumpDir = process.argv[7];
  const T = config.sequence_len;
  const model = GPT.initialize(tf, config, 0);
  const optimizer = new AdamW(tf, model.parameters());
  // Deterministic byte tokens; targets are the inputs shifted by one, as the data loader makes them.
  const ids = new Int32Array(batch * (T + 1)).map((_, i) => (i * 7919 + 13) % 256);
  const inputs = new Int32Array(batch * T);
  const targets = new Int32Array(batch * T);
  for (let b = 0; b < batch; b++) {
    inputs.set(ids.subarray(b * (T + 1), b * (T + 1) + T), b * T);
    targets.set(ids.subarray(b * (T + 1) + 1, (b + 1) * (T + 1)), b * T);
  }
  if (dumpDir) {
    writeFileSync(join(dumpDir, 'init.safetensors'), encodeSafetensors(model.namedTensors()));
    const batchFile = { config, batch, lr: 1e-3, inputs: [...inputs], targets: [...targets] };
    writeFileSync(join(dumpDir, 'batch.json'), JSON.stringify(batchFile));
  }
  const times: number[] = [];
  const losses: number[] = [];
  let loss = NaN;
  for (let s = 0; s < warmup + steps; s++) {
    const t0 = performance.now();
    const x = tf.tensor2d(inputs, [batch, T], 'int32');
    const y = tf.tensor2d(targets, [batch, T], 'int32');
    const out = model.lossAndGrads(x, y);
    optimizer.apply(out.grads, 1e-3);
    loss = out.loss.dataSync()[0]!;
    losses.push(loss);
    tf.dispose([x, y, out.loss, ...out.grads.values()]);
    if (s >= warmup) times.push(performance.now() - t0);
  }
  optimizer.dispose();
  model.dispose();
  const result = {
    backend,
    params: model.numParams(),
    config,
    batch,
    warmup,
    steps,
    medianMs: median(times),
    minMs: Math.min(...times),
    maxMs: Math.max(...times),
    loss,
    losses: losses.slice(0, 3),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

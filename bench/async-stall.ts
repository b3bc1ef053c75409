/**
 * Training-step stall of a checkpoint save (`npm run bench:async`): one run, one model, the training loop of
 * train/trainer.ts (tokens in, GPT.lossAndGrads, AdamW.apply, loss read back; every K steps a snapshot of
 * model.namedTensors() + optimizer.stateTensors() saved exactly as the trainer saves it), two ways,
 * alternating run by run:
 *
 *   sync:  saveCheckpoint(store, step, snapshot) awaited in the loop (asyncSave false)
 *   async: AsyncSaver.save(dir, step, snapshot, { transfer: true, shared: true }) (the trainer's default):
 *          the loop waits for the previous save, copies the tensors into reusable shared buffers
 *          (SnapshotBuffers) and hands them to the worker thread, which serialises, hashes and writes
 *
 * Like the trainer, the loop only yields to the event loop at a save, so an async save's commit (manifest)
 * runs when the next save first waits for the one in flight: that wait is part of the next save's stall.
 *
 * The stall of one save = the time the loop is held at the save point (snapshot + save call, timed directly)
 * + the extra time of the W steps after it over the run's median clean step (in async mode the worker
 * thread competes with training for the cores). The sync save time is the same sum in sync mode. Steps
 * within W after a save are left out of the clean median. The first save of a run is shown apart: in async
 * mode it also starts the worker thread (loading the checkpoint code into it).
 *
 * Stores (BENCH_ASYNC_STORES, default local,s3): a local temp dir, and a versitygw bucket on loopback
 * (test/helpers/s3-server.ts; the worker thread gets the S3 settings through storeConfig, as in the trainer).
 * Knobs (environment): BENCH_ASYNC_EMBD (512), BENCH_ASYNC_LAYERS (4), BENCH_ASYNC_SEQ (32),
 * BENCH_ASYNC_BATCH (1), BENCH_ASYNC_EVERY (K = 5), BENCH_ASYNC_WINDOW (W = 2 steps after a save),
 * BENCH_ASYNC_SAVES (4 per run), BENCH_ASYNC_ROUNDS (3), BENCH_ASYNC_BACKEND (default: the trainer's choice).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsyncSaver, configureLogging, configureS3, saveCheckpoint } from '../checkpoint';
import { AdamW } from '../model/adamw';
import { initBackend, type BackendChoice } from '../model/backend';
import { GPT, normalizeConfig } from '../model/gpt';
import { SnapshotBuffers } from '../model/tensors';
import { startS3Server, type S3TestServer } from '../test/helpers/s3-server';
import { mainThreadCpuSeconds } from './lib/cpu-time';
import { fmtSpread, spread } from './lib/spread';
import { fmt, markdownTable, median, MiB } from './lib/stats';
import { machineInfo } from './lib/system';

const MODEL = {
  n_embd: Number(process.env.BENCH_ASYNC_EMBD ?? 512),
  n_layer: Number(process.env.BENCH_ASYNC_LAYERS ?? 4),
  sequence_len: Number(process.env.BENCH_ASYNC_SEQ ?? 32),
};
const BATCH = Number(process.env.BENCH_ASYNC_BATCH ?? 1);
const EVERY = Number(process.env.BENCH_ASYNC_EVERY ?? 5);
const WINDOW = Math.min(EVERY - 1, Number(process.env.BENCH_ASYNC_WINDOW ?? 2));
const SAVES = Number(process.env.BENCH_ASYNC_SAVES ?? 4);
const ROUNDS = Number(process.env.BENCH_ASYNC_ROUNDS ?? 3);
const STORES = (process.env.BENCH_ASYNC_STORES ?? 'local,s3').split(',');
const BACKEND = process.env.BENCH_ASYNC_BACKEND as BackendChoice | undefined;
/** Saves at K, 2K, ... SAVES×K; then K more steps so the last save has its window. */
const STEPS = (SAVES + 1) * EVERY;
/** The first steps compile kernels and fill caches: left out of the clean median. */
const WARMUP = 2;

type Mode = 'sync' | 'async';
const MODES: Mode[] = ['sync', 'async'];

interface Run {
  /** Wall seconds of each step (index = step number, 1-based), without the save that follows it. */
  step: number[];
  /** Wall seconds the loop was held at each save point, and the main thread's CPU seconds meanwhile. */
  held: number[];
  heldCpu: number[];
  /** Of `held`: model.namedTensors() + optimizer.stateTensors() (the rest is the save call). */
  snapshot: number[];
}

interface SaveStall {
  held: number;
  snapshot: number;
  heldCpu: number;
  contention: number;
  total: number;
}

async function runOnce(
  tf: Awaited<ReturnType<typeof initBackend>>['tf'],
  dir: string,
  mode: Mode,
  storeConfig: unknown,
) {
  const config = normalizeConfig(MODEL);
  const T = config.sequence_len;
  const model = GPT.initialize(tf, config, 1);
  const optimizer = new AdamW(tf, model.parameters());
  const saver = mode === 'async' ? new AsyncSaver({ storeConfig }) : null;
  const buffers = new SnapshotBuffers();
  // Deterministic byte tokens; targets are the inputs shifted by one, as the data loader makes them.
  const ids = Int32Array.from({ length: BATCH * (T + 1) }, (_, i) => (i * 7919 + 13) % 256);
  const inputs = new Int32Array(BATCH * T);
  const targets = new Int32Array(BATCH * T);
  for (let b = 0; b < BATCH; b++) {
    inputs.set(ids.subarray(b * (T + 1), b * (T + 1) + T), b * T);
    targets.set(ids.subarray(b * (T + 1) + 1, (b + 1) * (T + 1)), b * T);
  }
  const run: Run = { step: [], held: [], heldCpu: [], snapshot: [] };
  let smoothed: number | null = null;
  try {
    for (let done = 1; done <= STEPS; done++) {
      const t0 = performance.now();
      const x = tf.tensor2d(inputs, [BATCH, T], 'int32');
      const y = tf.tensor2d(targets, [BATCH, T], 'int32');
      const { loss, grads } = model.lossAndGrads(x, y);
      optimizer.apply(grads, 1e-3);
      const value = loss.dataSync()[0]!;
      tf.dispose([x, y, loss, ...grads.values()]);
      smoothed = smoothed === null ? value : 0.9 * smoothed + 0.1 * value;
      run.step[done] = (performance.now() - t0) / 1000;
      if (done % EVERY !== 0 || done > SAVES * EVERY) continue;
      const h0 = performance.now();
      const c0 = mainThreadCpuSeconds();
      // What the trainer hands over at a save (its meta is a few hundred bytes of JSON more), taken as the
      // trainer takes it: an async save first waits for the previous one, then copies the tensors into the
      // run's reusable snapshot buffers, which the save thread reads where they are.
      const meta = { model_config: config, step: done, loop_state: { smoothed_loss: smoothed } };
      const tensors = () => ({ model: model.namedTensors(), optimizer: optimizer.stateTensors() });
      if (saver) {
        await saver.finish();
        const s0 = performance.now();
        const snapshot = { ...buffers.capture(tensors), meta };
        run.snapshot.push((performance.now() - s0) / 1000);
        await saver.save(dir, done, snapshot, { transfer: true, shared: true });
      } else {
        const s0 = performance.now();
        const snapshot = { ...tensors(), meta };
        run.snapshot.push((performance.now() - s0) / 1000);
        await saveCheckpoint(dir, done, snapshot);
      }
      run.held.push((performance.now() - h0) / 1000);
      run.heldCpu.push(mainThreadCpuSeconds() - c0);
    }
    await saver?.finish();
  } finally {
    await saver?.close();
    optimizer.dispose();
    model.dispose();
  }
  return run;
}

function stallsOf(run: Run): SaveStall[] {
  const afterSave = (s: number) => s % EVERY !== 0 && s % EVERY <= WINDOW && s > EVERY;
  const clean: number[] = [];
  for (let s = WARMUP + 1; s <= STEPS; s++) if (!afterSave(s)) clean.push(run.step[s]!);
  const base = median(clean);
  return run.held.map((held, i) => {
    const saveStep = (i + 1) * EVERY;
    let contention = 0;
    for (let s = saveStep + 1; s <= saveStep + WINDOW; s++) contention += run.step[s]! - base;
    return {
      held,
      snapshot: run.snapshot[i]!,
      heldCpu: run.heldCpu[i]!,
      contention,
      total: held + contention,
    };
  });
}

function cleanMedian(run: Run): number {
  const steps: number[] = [];
  for (let s = WARMUP + 1; s <= STEPS; s++)
    if (s % EVERY === 0 || s % EVERY > WINDOW) steps.push(run.step[s]!);
  return median(steps);
}

async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  configureLogging({ level: 'warn' });
  const { tf, name: backend } = await initBackend({ force: BACKEND, log: () => undefined });
  const config = normalizeConfig(MODEL);
  const probe = GPT.initialize(tf, config, 1);
  const params = probe.numParams();
  probe.dispose();
  const m = machineInfo();
  const loadStart = loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  const work = mkdtempSync(join(tmpdir(), 'ckpt-bench-async-'));
  let server: S3TestServer | null = null;
  const tables: string[] = [];
  try {
    for (const storeKind of STORES) {
      let storeConfig: unknown;
      let location = (name: string) => join(work, name);
      if (storeKind === 's3') {
        server = await startS3Server();
        // The main thread (commit) opens s3:// through configureS3; the worker thread through storeConfig.
        storeConfig = server.options();
        configureS3(server.options());
        const bucket = server.bucket;
        location = (name: string) => `s3://${bucket}/${name}`;
      }
      const stalls: Record<Mode, { first: SaveStall[]; later: SaveStall[]; steps: number[] }> = {
        sync: { first: [], later: [], steps: [] },
        async: { first: [], later: [], steps: [] },
      };
      for (let r = 0; r < ROUNDS; r++) {
        for (let i = 0; i < MODES.length; i++) {
          const mode = MODES[(i + r) % MODES.length]!;
          const run = await runOnce(tf, location(`${storeKind}-${mode}-${r}`), mode, storeConfig);
          const s = stallsOf(run);
          stalls[mode].first.push(s[0]!);
          stalls[mode].later.push(...s.slice(1));
          stalls[mode].steps.push(cleanMedian(run));
          process.stderr.write(
            `  ${storeKind} round ${r + 1} ${mode}: clean step ${fmt(cleanMedian(run), 3)} s, stalls ` +
              s.map((x) => `${fmt(x.held, 3)}+${fmt(x.contention, 3)}`).join(' ') +
              '\n',
          );
        }
      }
      const all = (mode: Mode) => [...stalls[mode].first, ...stalls[mode].later];
      const syncSave = spread(all('sync').map((x) => x.total)).median;
      const pct = (v: number) => `${fmt((100 * v) / syncSave, 1)} %`;
      const rows = MODES.map((mode) => {
        const later = stalls[mode].later;
        const first = stalls[mode].first;
        const total = spread(later.map((x) => x.total));
        return [
          mode === 'sync' ? 'sync saveCheckpoint in the loop' : 'async AsyncSaver (trainer default)',
          fmtSpread(spread(stalls[mode].steps), 3),
          fmtSpread(spread(later.map((x) => x.held)), 3),
          `${fmt(spread(later.map((x) => x.snapshot)).median, 3)} / ${fmt(spread(later.map((x) => x.held - x.snapshot)).median, 3)}`,
          fmt(spread(later.map((x) => x.heldCpu)).median, 2),
          fmtSpread(spread(later.map((x) => x.contention)), 3),
          fmtSpread(total, 3),
          mode === 'sync' ? '100 % (= sync save time)' : pct(total.median),
          `${fmt(spread(first.map((x) => x.total)).median, 3)} (${mode === 'sync' ? '100 %' : pct(spread(first.map((x) => x.total)).median)})`,
        ];
      });
      tables.push(
        `#### Store: ${storeKind === 's3' ? `S3 (${server?.kind}, posix backend, on loopback)` : 'local temp dir'}\n\n` +
          `Saves 2–${SAVES} of each run (${(SAVES - 1) * ROUNDS} per mode); seconds as median (min–max).\n\n` +
          markdownTable(
            [
              'mode',
              'clean step s (per run)',
              'loop held at the save s',
              'of which snapshot / save call s',
              'main-thread CPU held s',
              `contention, next ${WINDOW} steps s`,
              'stall per save s',
              'stall / sync save',
              '1st save of a run: stall s',
            ],
            rows,
          ),
      );
      if (server) {
        await server.stop();
        server = null;
      }
    }
    const ckptMiB = (params * 4 * 3) / MiB;
    console.log(
      `bench:async — ${backend} backend, GPT n_embd ${config.n_embd}, n_layer ${config.n_layer}, seq ${config.sequence_len}, ` +
        `batch ${BATCH}: ${(params / 1e6).toFixed(2)} M params, checkpoint ≈ ${ckptMiB.toFixed(0)} MiB (f32 model + AdamW ` +
        `moments); ${STEPS} steps per run, a save every ${EVERY} steps, ${ROUNDS} rounds of sync/async per store`,
    );
    console.log(
      `machine: ${m.cpuModel}, ${m.nproc} cores, ${m.memoryGiB.toFixed(0)} GiB, node ${m.node}, ${m.os}; load average ` +
        `${loadStart} at the start, ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')} at the end`,
    );
    for (const t of tables) console.log(`\n${t}`);
  } finally {
    if (server) await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

/**
 * The training loop, resumable to the bit. Everything that decides the next update is in the checkpoint:
 * weights, AdamW moments and step, the data position (global sample index; the order is a pure function of
 * the seed), the loop state (smoothed loss, best validation) and the schedule. Resuming at step k therefore
 * continues exactly as the uninterrupted run did, on the same backend.
 */
import { resolve } from 'node:path';
import {
  committedSteps,
  findLastStep,
  InvalidArgumentError,
  loadCheckpoint,
  log0,
  NoCheckpointError,
  openStore,
  optimFile,
  saveCheckpoint,
  AsyncSaver,
  WorldSizeMismatchError,
  validateStep,
  type Location,
  type SaveDtype,
} from '../checkpoint';
import { AdamW } from '../model/adamw';
import { initBackend, type BackendChoice, type TF } from '../model/backend';
import { GPT, normalizeConfig, type GPTConfig } from '../model/gpt';
import { ByteTokenizer } from '../model/tokenizer';
import type * as tfjs from '@tensorflow/tfjs';
import type { NamedTensors } from '../checkpoint/tensors';
import type { ProcessGroup } from './dist';
import { TextData } from './data';
import { ownedBy, planShards, reshardOptimizer, type ShardPlan } from './sharding';

type TfTensor = tfjs.Tensor;
import { learningRate, validateSchedule, type ScheduleConfig } from './schedule';

/** Settings that must match the checkpoint on resume (they change the run's trajectory). */
export interface RunConfig {
  model: GPTConfig;
  seed: number;
  batch: number;
  schedule: ScheduleConfig;
  data: { name: string; sha256: string; bytes: number; path?: string };
}

export interface TrainOptions {
  dir: Location;
  /** Absolute target step. */
  steps: number;
  saveEvery: number;
  /** Model config overrides (depth = n_layer, n_embd, n_head, sequence_len); defaults from DEFAULT_CONFIG. */
  model?: Partial<GPTConfig>;
  seed?: number;
  batch?: number;
  schedule?: Partial<ScheduleConfig>;
  dataFile?: string;
  /** 'none': refuse a tag that already has checkpoints; 'last': newest verified step (or scratch); or a step. */
  resume?: 'none' | 'last' | { step: number };
  saveDtype?: SaveDtype;
  backend?: BackendChoice;
  signal?: AbortSignal;
  /** Multi-rank training: this process's group (W ranks, ZeRO-1 sharded optimizer). */
  group?: ProcessGroup;
  /** Accept a checkpoint saved with another world size, re-partitioning its optimizer state. */
  reshard?: boolean;
  /** Save on a background thread while training goes on (default true for directory/URL locations). */
  asyncSave?: boolean;
  /** What a background save thread needs to open the store (e.g. S3 settings). */
  storeConfig?: unknown;
  onProgress?: (p: Progress) => void;
  /** A checkpoint this rank wrote is committed: how long its save took and how many bytes this rank wrote. */
  onSave?: (step: number, io: CheckpointIo) => void;
  /** The checkpoint training resumes from is loaded (weights and this rank's optimizer state). */
  onResume?: (step: number, io: CheckpointIo) => void;
}

/** Time and size of one checkpoint save or load, as seen by this rank. */
export interface CheckpointIo {
  seconds: number;
  bytes: number;
}

export interface Progress {
  step: number;
  steps: number;
  loss: number;
  smoothedLoss: number;
  lr: number;
  stepsPerSec: number;
}

export interface TrainSummary {
  startStep: number;
  endStep: number;
  resumedFrom: number | null;
  saved: number[];
  finalLoss: number | null;
  backend: string;
  seconds: number;
}

export const DEFAULT_SCHEDULE: ScheduleConfig = { kind: 'constant', lr: 3e-3, warmup: 10, horizon: 1000 };
const EMA = 0.9;

export class TrainingAborted extends Error {
  constructor(readonly step: number) {
    super(`training cancelled at step ${step}; nothing half-saved`);
    this.name = 'TrainingAborted';
  }
}

interface LoopState {
  smoothed_loss: number | null;
  best_val_bpb: number | null;
  elapsed_s: number;
}

export async function train(options: TrainOptions): Promise<TrainSummary> {
  const started = Date.now();
  const store = openStore(options.dir);
  const target = validateStep(options.steps, 'steps');
  if (!Number.isSafeInteger(options.saveEvery) || options.saveEvery < 1) {
    throw new InvalidArgumentError(`save-every must be an integer >= 1, got ${options.saveEvery}`, {
      field: 'save-every',
    });
  }
  const { tf, name: backend } = await initBackend({ force: options.backend, log: (m) => log0(m) });

  const rank = options.group?.rank ?? 0;
  const worldSize = options.group?.worldSize ?? 1;
  const resumeStep = await resolveResume(store, options.resume ?? 'none');
  let loadStarted = Date.now();
  const loaded =
    resumeStep === null ? null : await loadCheckpoint(store, resumeStep, { loadOptimizer: false });
  let loadMs = Date.now() - loadStarted;
  const run = runConfig(options, loaded?.meta as Record<string, unknown> | undefined);
  const data = TextData.fromFile(options.dataFile, run.model.sequence_len, run.seed);
  checkData(run, data, resumeStep, options.dataFile);
  const tokenizer = new ByteTokenizer();
  if (run.model.vocab_size < tokenizer.vocabSize) {
    throw new InvalidArgumentError(
      `vocab_size ${run.model.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize}`,
      {
        field: 'vocab_size',
      },
    );
  }

  const startStep = resumeStep ?? 0;
  if (target <= startStep) {
    log0(`already at step ${startStep}; --steps ${target} asks for nothing more, nothing to do`);
    return {
      startStep,
      endStep: startStep,
      resumedFrom: resumeStep,
      saved: [],
      finalLoss: null,
      backend,
      seconds: 0,
    };
  }

  if (run.batch % worldSize !== 0) {
    throw new InvalidArgumentError(
      `--batch ${run.batch} (the global batch) is not divisible by world size ${worldSize}`,
      {
        field: 'batch',
      },
    );
  }
  const model = loaded
    ? GPT.fromNamedTensors(tf, run.model, loaded.model!)
    : GPT.initialize(tf, run.model, run.seed);
  const plan = planShards(
    [...model.parameters()].map(([name, v]) => [name, v.size]),
    worldSize,
  );
  const owned = ownedBy(plan, rank);
  loadStarted = Date.now();
  const state = loaded
    ? await loadOptimizerShard(store, loaded.step, loaded.manifest.world_size, plan, rank, options.reshard)
    : null;
  loadMs += Date.now() - loadStarted;
  if (loaded) {
    const sameWorld = loaded.manifest.world_size === worldSize;
    const read = Object.entries(loaded.manifest.files).filter(
      ([name]) =>
        !name.startsWith('optim_') ||
        (state !== null && (!sameWorld || name === optimFile(loaded.step, rank))),
    );
    options.onResume?.(loaded.step, {
      seconds: loadMs / 1000,
      bytes: read.reduce((sum, [, record]) => sum + record.bytes, 0),
    });
  }
  const optimizer = state
    ? AdamW.fromState(tf, model.parameters(), state, { owned })
    : new AdamW(tf, model.parameters(), { owned });
  const loop: LoopState = (loaded?.meta.loop_state as LoopState | undefined) ?? {
    smoothed_loss: null,
    best_val_bpb: null,
    elapsed_s: 0,
  };
  if (loaded) log0(`resuming ${store.location} from step ${startStep} (target ${target})`);
  else log0(`training ${store.location} from scratch to step ${target} on ${backend}`);

  const saved: number[] = [];
  const saveStarted = new Map<number, number>();
  const committed = (step: number, files: Record<string, { bytes: number }>) => {
    saved.push(step);
    const seconds = (Date.now() - (saveStarted.get(step) ?? Date.now())) / 1000;
    saveStarted.delete(step);
    options.onSave?.(step, { seconds, bytes: Object.values(files).reduce((sum, f) => sum + f.bytes, 0) });
  };
  // A checkpoint is reported only once its manifest exists: async saves report from their commit.
  const saver =
    options.asyncSave !== false && typeof options.dir === 'string'
      ? new AsyncSaver({ storeConfig: options.storeConfig, onCommitted: (r) => committed(r.step, r.files) })
      : null;
  const alreadySaved = new Set(await committedSteps(store));
  let history: Array<[number, number]> = [];
  let lastLoss: number | null = null;
  let windowStart = Date.now();
  let windowSteps = 0;
  try {
    for (let step = startStep; step < target; step++) {
      if (options.signal?.aborted) throw new TrainingAborted(step);
      const lr = learningRate(run.schedule, step);
      // Training steps never yield to the event loop; while a save is in flight, yield once per step so
      // its commit advances now rather than when the next save waits for it.
      if (saver?.savingStep != null) await new Promise((r) => setImmediate(r));
      const loss = options.group
        ? await shardedStep(tf, model, optimizer, data, step, run.batch, lr, options.group, plan)
        : trainStep(tf, model, optimizer, data, step, run.batch, lr);
      lastLoss = loss;
      loop.smoothed_loss = loop.smoothed_loss === null ? loss : EMA * loop.smoothed_loss + (1 - EMA) * loss;
      history.push([step + 1, loss]);
      windowSteps++;
      const now = Date.now();
      const stepsPerSec = (windowSteps * 1000) / Math.max(1, now - windowStart);
      if (now - windowStart > 2000) {
        windowStart = now;
        windowSteps = 0;
      }
      options.onProgress?.({
        step: step + 1,
        steps: target,
        loss,
        smoothedLoss: loop.smoothed_loss,
        lr,
        stepsPerSec,
      });
      const done = step + 1;
      if (done % options.saveEvery === 0 || done === target) {
        loop.elapsed_s += (Date.now() - started) / 1000;
        if (alreadySaved.has(done)) {
          // Resuming from an earlier step replays steps whose checkpoints exist; committed files are never
          // rewritten, and an exact replay would write the same tensors anyway.
          log0(`step ${done} is already committed in ${store.location}; kept as it is`, { step: done });
          history = [];
          continue;
        }
        saveStarted.set(done, Date.now());
        const snapshot = {
          model: model.namedTensors(),
          optimizer: optimizer.stateTensors(),
          meta: {
            ...buildMeta(run, data, tokenizer, backend, done, run.batch, loop, history),
            sharding: { world_size: worldSize, owners: plan.owners },
          },
        };
        const rankOptions = { rank, worldSize, saveDtype: options.saveDtype };
        if (saver) {
          await saver.save(options.dir as string, done, snapshot, { ...rankOptions, transfer: true });
        } else {
          const result = await saveCheckpoint(store, done, snapshot, {
            ...rankOptions,
            coordinator: options.group?.coordinator(),
          });
          if (result.committed || rank !== 0) committed(done, result.files);
        }
        history = [];
      }
    }
    await saver?.finish();
  } finally {
    model.dispose();
    optimizer.dispose();
    // On an error or a cancellation the save in flight still completes (or fails) as a whole: a commit
    // is atomic, so nothing half-done is left either way.
    await saver?.close().catch(() => undefined);
  }
  return {
    startStep,
    endStep: target,
    resumedFrom: resumeStep,
    saved,
    finalLoss: lastLoss,
    backend,
    seconds: (Date.now() - started) / 1000,
  };
}

function trainStep(
  tf: TF,
  model: GPT,
  optimizer: AdamW,
  data: TextData,
  step: number,
  batch: number,
  lr: number,
): number {
  const T = model.config.sequence_len;
  const { inputs, targets } = data.samples(step * batch, batch);
  const x = tf.tensor2d(inputs, [batch, T], 'int32');
  const y = tf.tensor2d(targets, [batch, T], 'int32');
  try {
    const { loss, grads } = model.lossAndGrads(x, y);
    try {
      optimizer.apply(grads, lr);
      return loss.dataSync()[0]!;
    } finally {
      loss.dispose();
      for (const g of grads.values()) g.dispose();
    }
  } finally {
    x.dispose();
    y.dispose();
  }
}

/**
 * One data-parallel step with a ZeRO-1 optimizer: each rank computes gradients on its slice of the global
 * batch; gradients are reduce-scattered so each rank holds the mean gradient of the parameters it owns;
 * each rank updates those; the new values are all-gathered so every rank holds the whole model again.
 */
async function shardedStep(
  tf: TF,
  model: GPT,
  optimizer: AdamW,
  data: TextData,
  step: number,
  batch: number,
  lr: number,
  group: ProcessGroup,
  plan: ShardPlan,
): Promise<number> {
  const local = batch / group.worldSize;
  const T = model.config.sequence_len;
  const { inputs, targets } = data.samples(step * batch + group.rank * local, local);
  const params = model.parameters();
  const flat = new Float32Array(plan.counts.reduce((a, b) => a + b, 0));
  let loss: number;
  tf.tidy(() => {
    const { loss: l, grads } = model.lossAndGrads(
      tf.tensor2d(inputs, [local, T], 'int32'),
      tf.tensor2d(targets, [local, T], 'int32'),
    );
    loss = l.dataSync()[0]!;
    for (const name of plan.layout)
      flat.set(grads.get(name)!.dataSync() as Float32Array, plan.offsets[name]!);
  });
  const mine = await group.reduceScatter(flat, plan.counts, 'mean');
  const owned = ownedBy(plan, group.rank);
  const base = plan.offsets[owned[0] ?? ''] ?? 0;
  const grads = new Map<string, TfTensor>();
  for (const name of owned) {
    const v = params.get(name)!;
    grads.set(
      name,
      tf.tensor(
        mine.subarray(plan.offsets[name]! - base, plan.offsets[name]! - base + v.size),
        v.shape,
        'float32',
      ),
    );
  }
  optimizer.apply(grads, lr);
  for (const g of grads.values()) g.dispose();
  const updated = new Float32Array(mine.length);
  for (const name of owned)
    updated.set(params.get(name)!.dataSync() as Float32Array, plan.offsets[name]! - base);
  const all = await group.allGather(updated, plan.counts);
  for (const name of plan.layout) {
    if (plan.owners[name] === group.rank) continue;
    const v = params.get(name)!;
    tf.tidy(() =>
      v.assign(
        tf.tensor(all.subarray(plan.offsets[name]!, plan.offsets[name]! + v.size), v.shape, 'float32'),
      ),
    );
  }
  const meanLoss = await group.allReduce(new Float32Array([loss!]), 'mean');
  return meanLoss[0]!;
}

/**
 * This rank's optimizer state from a checkpoint: its own shard when the world size is unchanged, else
 * (with reshard) every old shard re-partitioned by the new ownership map.
 */
async function loadOptimizerShard(
  store: ReturnType<typeof openStore>,
  step: number,
  savedWorldSize: number,
  plan: ShardPlan,
  rank: number,
  reshard = false,
): Promise<NamedTensors | null> {
  if (savedWorldSize === plan.worldSize) {
    return (await loadCheckpoint(store, step, { rank, worldSize: plan.worldSize, loadModel: false }))
      .optimizer;
  }
  if (!reshard) {
    throw new WorldSizeMismatchError(savedWorldSize, plan.worldSize, {
      file: `manifest_${String(step).padStart(6, '0')}.json`,
      step,
    });
  }
  const shards: NamedTensors[] = [];
  for (let r = 0; r < savedWorldSize; r++) {
    const shard = (await loadCheckpoint(store, step, { rank: r, loadModel: false })).optimizer;
    if (!shard) return null;
    shards.push(shard);
  }
  log0(
    `resharding the optimizer state of step ${step} from world size ${savedWorldSize} to ${plan.worldSize}`,
    { step },
  );
  return reshardOptimizer(shards, plan, rank);
}

async function resolveResume(
  store: ReturnType<typeof openStore>,
  resume: TrainOptions['resume'],
): Promise<number | null> {
  if (resume === 'none' || resume === undefined) {
    const existing = await committedSteps(store);
    if (existing.length > 0) {
      throw new InvalidArgumentError(
        `${store.location} already has checkpoints (last step ${existing[existing.length - 1]}); ` +
          'pass --resume to continue it, or choose another --tag',
        { field: 'resume' },
      );
    }
    return null;
  }
  if (resume === 'last') {
    try {
      return await findLastStep(store);
    } catch (err) {
      if (!(err instanceof NoCheckpointError)) throw err;
      if ((await committedSteps(store)).length > 0) throw err;
      log0(`no checkpoint in ${store.location} yet: starting from scratch`);
      return null;
    }
  }
  return validateStep(resume.step, 'resume-from-step');
}

/** Settings for this run: from the flags, or on resume from meta, refusing flags that contradict it. */
function runConfig(options: TrainOptions, meta: Record<string, unknown> | undefined): RunConfig {
  const saved = meta?.run as RunConfig | undefined;
  if (!saved) {
    return {
      model: normalizeConfig({ ...(options.model ?? {}) }),
      seed: options.seed ?? 0,
      batch: options.batch ?? 8,
      schedule: validateSchedule({ ...DEFAULT_SCHEDULE, ...(options.schedule ?? {}) }),
      data: { name: '', sha256: '', bytes: 0 },
    };
  }
  const model = normalizeConfig(meta!.model_config as Partial<GPTConfig>);
  const clash = (field: string, given: unknown, was: unknown) => {
    if (given !== undefined && given !== was) {
      throw new InvalidArgumentError(
        `--${field} ${given} contradicts the checkpoint being resumed (${field} = ${was}); drop the flag or start a new tag`,
        { field },
      );
    }
  };
  const m = options.model ?? {};
  clash('depth', m.n_layer, model.n_layer);
  clash('n-embd', m.n_embd, model.n_embd);
  clash('n-head', m.n_head, model.n_head);
  clash('seq-len', m.sequence_len, model.sequence_len);
  clash('seed', options.seed, saved.seed);
  clash('batch', options.batch, saved.batch);
  const s = options.schedule ?? {};
  clash('lr', s.lr, saved.schedule.lr);
  clash('schedule', s.kind, saved.schedule.kind);
  clash('warmup', s.warmup, saved.schedule.warmup);
  clash('horizon', s.horizon, saved.schedule.horizon);
  return { model, seed: saved.seed, batch: saved.batch, schedule: saved.schedule, data: saved.data };
}

function checkData(
  run: RunConfig,
  data: TextData,
  resumeStep: number | null,
  dataFile: string | undefined,
): void {
  if (resumeStep !== null && run.data.sha256 !== data.identity.sha256) {
    throw new InvalidArgumentError(
      `--data ${data.identity.name} (sha256 ${data.identity.sha256.slice(0, 12)}…) is not the data the checkpoint was ` +
        `trained on (${run.data.name}, sha256 ${run.data.sha256.slice(0, 12)}…)`,
      { field: 'data' },
    );
  }
  // The path lets evaluation find the same held-out split later; the hash guards against a changed file.
  run.data = { ...data.identity, ...(dataFile ? { path: resolve(dataFile) } : {}) };
}

function buildMeta(
  run: RunConfig,
  data: TextData,
  tokenizer: ByteTokenizer,
  backend: string,
  step: number,
  batch: number,
  loop: LoopState,
  history: Array<[number, number]>,
): Record<string, unknown> {
  return {
    model_config: run.model,
    run,
    tokenizer: tokenizer.identity(),
    backend,
    dataloader_state: { sample_index: step * batch },
    // All randomness is counter-based (seed + stream name + index), so the seed and the sample index
    // above are the complete RNG state.
    rng_state: {
      kind: 'counter',
      seed: run.seed,
      data_stream: 'data-epoch-<epoch>',
      sample_index: step * batch,
    },
    loop_state: { ...loop },
    loss_history: history,
    data: data.identity,
    saved_at: new Date().toISOString(),
  };
}

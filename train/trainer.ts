/**
 * The training loop, resumable to the bit, for any training program (program/contract.ts). Everything that
 * decides the next update is in the checkpoint: the program's tensors and JSON state, the optimizer state,
 * the data position (global sample index; a program's data order is a pure function of the seed and that
 * index), the loop state (smoothed loss) and the schedule. Resuming at step k therefore continues exactly as
 * the uninterrupted run did, on the same backend.
 */
import {
  committedSteps,
  InvalidArgumentError,
  loadCheckpoint,
  log0,
  manifestFile,
  metaFile,
  openStore,
  optimFile,
  readManifest,
  writerEpochs,
  saveCheckpoint,
  AsyncSaver,
  WorldSizeMismatchError,
  validateStep,
  type Location,
  type SaveDtype,
  type WriterLease,
} from '../checkpoint';
import { AdamW } from '../model/adamw';
import { SnapshotBuffers } from '../model/tensors';
import { initBackend, type BackendChoice, type TF } from '../model/backend';
import type * as tfjs from '@tensorflow/tfjs';
import type { NamedTensors } from '../checkpoint/tensors';
import type { Batch, Json, Session, StepSession, TrainingProgram } from '../program/contract';
import { ProgramContractError } from '../program/errors';
import { checkProgramMeta, programRecord, resolveRunConfig } from '../program/meta';
import { registerProgramMigrations } from '../program/load';
import { gptProgram } from '../model/program';
import type { ProcessGroup } from './dist';
import { ownedBy, planShards, reshardOptimizer, type ShardPlan } from './sharding';
import { learningRate, type ScheduleConfig } from './schedule';
import { resolveResume, TrainingAborted, type ResumeChoice } from './resume';

type TfTensor = tfjs.Tensor;

/** How long training may run without yielding to the event loop. */
const YIELD_EVERY_MS = 200;

export interface TrainOptions {
  dir: Location;
  /** Absolute target step. */
  steps: number;
  saveEvery: number;
  /** The model-specific part (default: the built-in GPT). */
  program?: TrainingProgram<unknown>;
  /**
   * Program config keys the user set (`--config` merged with the program's flags); the rest come from the
   * program's defaults, or on resume from the checkpoint. Keys that contradict the checkpoint are refused.
   */
  config?: Record<string, unknown>;
  /** Config keys by the flag that set them, so a contradiction names the flag the user typed. */
  configFlags?: Record<string, string>;
  seed?: number;
  batch?: number;
  schedule?: Partial<ScheduleConfig>;
  /** 'none': refuse a tag that already has checkpoints; 'last': newest verified step (or scratch); or a step. */
  resume?: ResumeChoice;
  saveDtype?: SaveDtype;
  backend?: BackendChoice;
  signal?: AbortSignal;
  /** Multi-rank training: this process's group (W ranks; ZeRO-1 sharded or replicated optimizer). */
  group?: ProcessGroup;
  /** Accept a checkpoint saved with another world size, re-partitioning its optimizer state. */
  reshard?: boolean;
  /** Save on a background thread while training goes on (default true for directory/URL locations). */
  asyncSave?: boolean;
  /** What a background save thread needs to open the store (e.g. S3 settings). */
  storeConfig?: unknown;
  /**
   * Rank 0's writer lease of `dir` (checkpoint/writer.ts), held and renewed by the caller: before training,
   * the files of uncommitted steps after the start step are cleared under it, every commit checks it, and
   * training stops with its error once it is lost. Other ranks have none.
   */
  writer?: WriterLease;
  onProgress?: (p: Progress) => void;
  /** A checkpoint this rank wrote is committed: how long its save took and how many bytes this rank wrote. */
  onSave?: (step: number, io: CheckpointIo) => void;
  /** The checkpoint training resumes from is loaded (weights and this rank's optimizer state). */
  onResume?: (step: number, io: CheckpointIo) => void;
  /**
   * The state a previous train() of this process kept in memory (sticky segments): used instead of
   * reading the checkpoint back when it is exactly the directory's last commit (warmStateFits), else
   * disposed. One rank only.
   */
  warm?: WarmRun;
  /** Keep the state in memory at the end instead of disposing of it (one rank only); called on success. */
  keepWarm?: (run: WarmRun) => void;
}

/**
 * A run's whole training state after a segment, kept in memory by a long-lived training process so that
 * its next segment needs no process start and no checkpoint read. `epoch` is the writer epoch that
 * committed `step` (null when this process did not commit it: the state is then never reused).
 */
export interface WarmRun {
  location: string;
  program: TrainingProgram<unknown>;
  backend: string;
  step: number;
  epoch: number | null;
  config: unknown;
  loop: ReturnType<typeof resolveRunConfig>['loop'];
  session: Session;
  optimizer: Optimizer;
  sharding: Record<string, unknown>;
  loopState: LoopState;
}

export function disposeWarm(run: WarmRun): void {
  run.session.dispose();
  run.optimizer.dispose();
}

/**
 * Why the kept state is not the directory's last commit, or null when it is: its step is the last
 * committed step, whose manifest was written under the kept writer epoch, and no writer but `writer`
 * (this segment's) has held the directory since. Anything else (a commit by another attempt, a writer in
 * between, a pruned or deleted step) and the state is not used.
 */
export async function warmStateMismatch(
  store: ReturnType<typeof openStore>,
  run: WarmRun,
  writer: WriterLease | undefined,
): Promise<string | null> {
  if (run.location !== store.location) return `it is of ${run.location}`;
  if (run.epoch === null) return `this process did not commit step ${run.step} itself`;
  if (writer === undefined) return 'this segment holds no writer lease';
  const last = (await committedSteps(store)).at(-1);
  if (last !== run.step) return `the last committed step is ${last ?? 'none'}, not ${run.step}`;
  const manifest = await readManifest(store, run.step);
  if (manifest.writer_epoch !== run.epoch)
    return `step ${run.step} was committed by writer epoch ${manifest.writer_epoch}, not ${run.epoch}`;
  const later = (await writerEpochs(store)).filter((e) => e > run.epoch!);
  if (later.length !== 1 || later[0] !== writer.epoch)
    return `writer epochs ${later.join(', ')} came after ${run.epoch} (this segment's: ${writer.epoch})`;
  return null;
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
  /** The learning rate of the step (loop-owned optimizers only). */
  lr: number | null;
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
  program: string;
  /** The segment continued from the state a previous train() of this process kept (no checkpoint read). */
  inMemory?: boolean;
}

export { DEFAULT_SCHEDULE } from './schedule';
export { resolveResume, TrainingAborted, type ResumeChoice } from './resume';
const EMA = 0.9;

/**
 * What the loop carries from step to step beyond the program's state. Only what the training computes:
 * a replay of a step writes the same meta, byte for byte, so the files of a save that crashed before its
 * commit are the ones its replay writes (published files are never replaced).
 */
interface LoopState {
  smoothed_loss: number | null;
}

/** The optimizer side of a session: the loop's AdamW (sharded over ranks) or the program's own. */
interface Optimizer {
  /** One step; returns the mean loss over all ranks. */
  step(batch: Batch, lr: number | null): Promise<number>;
  tensors(): NamedTensors;
  dispose(): void;
}

export async function train(options: TrainOptions): Promise<TrainSummary> {
  const started = Date.now();
  const program = options.program ?? (gptProgram as TrainingProgram<unknown>);
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
  registerProgramMigrations(program);
  const mismatch = !options.warm
    ? null
    : options.warm.program !== program
      ? 'another program'
      : options.warm.backend !== backend
        ? `it was trained on ${options.warm.backend}`
        : options.resume !== 'last' || worldSize !== 1
          ? 'this run does not resume the last step on one rank'
          : await warmStateMismatch(store, options.warm, options.writer);
  const warm = mismatch === null ? options.warm : undefined;
  if (options.warm && !warm) {
    log0(`the state kept in memory is not used (${mismatch}): reading ${store.location} back`);
    disposeWarm(options.warm);
  }
  const resumeStep = warm ? warm.step : await resolveResume(store, options.resume ?? 'none');
  let loadStarted = Date.now();
  const loaded =
    resumeStep === null || warm ? null : await loadCheckpoint(store, resumeStep, { loadOptimizer: false });
  let loadMs = Date.now() - loadStarted;
  if (loaded) checkProgramMeta(program, loaded.meta, metaFile(loaded.step));
  const { config, loop } = warm
    ? { config: warm.config as ReturnType<typeof resolveRunConfig>['config'], loop: warm.loop }
    : resolveRunConfig(program, options, loaded?.meta);

  const startStep = resumeStep ?? 0;
  if (target <= startStep) {
    log0(`already at step ${startStep}; --steps ${target} asks for nothing more, nothing to do`);
    if (warm) options.keepWarm?.(warm);
    return {
      startStep,
      endStep: startStep,
      resumedFrom: resumeStep,
      saved: [],
      finalLoss: null,
      backend,
      seconds: 0,
      program: program.name,
    };
  }

  if (loop.batch % worldSize !== 0) {
    throw new InvalidArgumentError(
      `--batch ${loop.batch} (the global batch) is not divisible by world size ${worldSize}`,
      {
        field: 'batch',
      },
    );
  }
  // A program-owned optimizer is replicated: every rank's file holds the whole state, so any one restores it.
  loadStarted = Date.now();
  const programOptimizer =
    loaded && program.optimizer === 'program'
      ? (
          await loadCheckpoint(store, loaded.step, {
            rank: loaded.manifest.world_size === worldSize ? rank : 0,
            loadModel: false,
          })
        ).optimizer
      : null;
  loadMs += Date.now() - loadStarted;
  const session: Session = warm
    ? warm.session
    : await program.start({
        tf,
        backend,
        config,
        loop,
        rank,
        worldSize,
        restore: loaded
          ? {
              step: loaded.step,
              model: loaded.model!,
              optimizer: programOptimizer,
              state: (loaded.meta.state as Json | undefined) ?? null,
              meta: loaded.meta,
            }
          : null,
        log: (m) => log0(m),
      });
  let optimizer: Optimizer;
  let sharding: Record<string, unknown> = { world_size: worldSize };
  if (warm) {
    optimizer = warm.optimizer;
    sharding = warm.sharding;
  } else
    try {
      const expected = program.optimizer === 'loop' ? 'gradients' : 'step';
      if (session.kind !== expected) {
        throw new ProgramContractError(
          `program "${program.name}" declares optimizer '${program.optimizer}' but its start() returned a ` +
            `'${session.kind}' session (expected '${expected}')`,
          { field: 'optimizer' },
        );
      }
      if (session.kind === 'gradients') {
        const plan = planShards(
          [...session.parameters()].map(([name, v]) => [name, v.size]),
          worldSize,
        );
        sharding = { world_size: worldSize, owners: plan.owners };
        loadStarted = Date.now();
        const state = loaded
          ? await loadOptimizerShard(
              store,
              loaded.step,
              loaded.manifest.world_size,
              plan,
              rank,
              options.reshard,
            )
          : null;
        loadMs += Date.now() - loadStarted;
        optimizer = loopOptimizer(tf, session, state, plan, rank, options.group);
      } else {
        // A program's own optimizer is replicated: any rank's file is the whole state, so another world size
        // needs no re-partitioning (and no --reshard).
        optimizer = programStepper(session, options.group);
      }
    } catch (err) {
      session.dispose();
      throw err;
    }
  if (loaded) {
    const sameWorld = loaded.manifest.world_size === worldSize;
    const read = Object.entries(loaded.manifest.files).filter(
      ([name]) => !name.startsWith('optim_') || !sameWorld || name === optimFile(loaded.step, rank),
    );
    options.onResume?.(loaded.step, {
      seconds: loadMs / 1000,
      bytes: read.reduce((sum, [, record]) => sum + record.bytes, 0),
    });
  }
  const loopState: LoopState = warm
    ? { ...warm.loopState }
    : { smoothed_loss: (loaded?.meta.loop_state as LoopState | undefined)?.smoothed_loss ?? null };
  if (warm) log0(`continuing ${store.location} from step ${startStep} in memory (target ${target})`);
  else if (loaded) log0(`resuming ${store.location} from step ${startStep} (target ${target})`);
  else log0(`training ${store.location} from scratch to step ${target} on ${backend}`);
  const savedOn = loaded?.meta.backend;
  if (typeof savedOn === 'string' && savedOn !== backend) {
    // Kernels differ in rounding and reduction order: same checkpoint, a different path from here on.
    log0(
      `step ${startStep} was saved on the ${savedOn} backend and resumes on ${backend}: the trajectory will ` +
        `differ from a run on one backend`,
    );
  }

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
  // Host memory the async saves copy the tensors into, reused from one save to the next.
  const snapshotBuffers = saver ? new SnapshotBuffers() : null;
  const alreadySaved = new Set(await committedSteps(store));
  // Files of steps this run will save, left by a save that never committed, that cannot be this run's
  // (saved at another world size or on another backend, or with no meta to tell): removed now, under the
  // lease, so that every rank publishes into a clean step. An exact replay (the retry of a killed segment)
  // writes the same bytes and shares them, without waiting for the writer it replaces.
  await options.writer?.clearUncommitted(
    store,
    startStep,
    (meta) => meta === null || meta.world_size !== worldSize || meta.backend !== backend,
  );
  const fence = options.writer?.token;
  let yielded = Date.now();
  let history: Array<[number, number]> = [];
  let lastLoss: number | null = null;
  let windowStart = Date.now();
  let windowSteps = 0;
  const local = loop.batch / worldSize;
  let kept = false;
  try {
    for (let step = startStep; step < target; step++) {
      if (options.signal?.aborted) throw new TrainingAborted(step);
      if (options.writer?.lost) throw options.writer.lost;
      // Training steps never yield to the event loop by themselves: yield a few times a second, so that
      // lease renewals, IPC messages and signals are handled while training runs.
      if (Date.now() - yielded > YIELD_EVERY_MS) {
        await new Promise((r) => setImmediate(r));
        yielded = Date.now();
      }
      const lr = loop.schedule ? learningRate(loop.schedule, step) : null;
      // Training steps never yield to the event loop; while a save is in flight, yield once per step so
      // its commit advances now rather than when the next save waits for it.
      if (saver?.savingStep != null) await new Promise((r) => setImmediate(r));
      const loss = await optimizer.step(
        { step, start: step * loop.batch + rank * local, count: local, batch: loop.batch },
        lr,
      );
      lastLoss = loss;
      loopState.smoothed_loss =
        loopState.smoothed_loss === null ? loss : EMA * loopState.smoothed_loss + (1 - EMA) * loss;
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
        smoothedLoss: loopState.smoothed_loss,
        lr,
        stepsPerSec,
      });
      const done = step + 1;
      if (done % options.saveEvery === 0 || done === target) {
        if (alreadySaved.has(done)) {
          // Resuming from an earlier step replays steps whose checkpoints exist; committed files are never
          // rewritten, and an exact replay would write the same tensors anyway.
          log0(`step ${done} is already committed in ${store.location}; kept as it is`, { step: done });
          history = [];
          continue;
        }
        saveStarted.set(done, Date.now());
        const meta = {
          program: programRecord(program),
          config: config as Record<string, unknown>,
          loop,
          ...(session.meta?.(loop) ?? {}),
          backend,
          dataloader_state: { sample_index: done * loop.batch },
          // All randomness the loop hands out is counter-based (seed + sample index), so the seed and the
          // sample index are the loop's whole RNG state; a program keeps any other state in `state`.
          rng_state: { kind: 'counter', seed: loop.seed, sample_index: done * loop.batch },
          loop_state: { ...loopState },
          loss_history: history,
          ...(session.state ? { state: session.state() } : {}),
          sharding,
        };
        const tensors = () => ({ model: session.modelTensors(), optimizer: optimizer.tensors() });
        const rankOptions = { rank, worldSize, saveDtype: options.saveDtype, fence };
        if (saver && snapshotBuffers) {
          // The previous save reads the snapshot buffers until it has finished: wait for it (save() would
          // anyway), then copy this step's tensors into the same buffers.
          await saver.finish();
          const snapshot = { ...snapshotBuffers.capture(tensors), meta };
          await saver.save(options.dir as string, done, snapshot, {
            ...rankOptions,
            transfer: true,
            shared: true,
          });
        } else {
          const result = await saveCheckpoint(
            store,
            done,
            { ...tensors(), meta },
            {
              ...rankOptions,
              coordinator: options.group?.coordinator(),
            },
          );
          if (result.committed || rank !== 0) committed(done, result.files);
        }
        history = [];
      }
    }
    await saver?.finish();
    if (options.keepWarm && worldSize === 1) {
      options.keepWarm({
        location: store.location,
        program,
        backend,
        step: target,
        // Only a state this writer committed itself is ever reused.
        epoch: saved.includes(target) && fence !== undefined ? fence.epoch : null,
        config,
        loop,
        session,
        optimizer,
        sharding,
        loopState: { ...loopState },
      });
      kept = true;
    }
  } finally {
    if (!kept) {
      session.dispose();
      optimizer.dispose();
    }
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
    program: program.name,
    ...(warm ? { inMemory: true } : {}),
  };
}

/** The loop's AdamW over the session's parameters: one rank updates all, W ranks a ZeRO-1 shard each. */
function loopOptimizer(
  tf: TF,
  session: Extract<Session, { kind: 'gradients' }>,
  state: NamedTensors | null,
  plan: ShardPlan,
  rank: number,
  group: ProcessGroup | undefined,
): Optimizer {
  const owned = ownedBy(plan, rank);
  const params = session.parameters();
  const adamw = state ? AdamW.fromState(tf, params, state, { owned }) : new AdamW(tf, params, { owned });
  return {
    step: async (batch, lr) =>
      group
        ? shardedStep(tf, session, adamw, batch, lr!, group, plan)
        : gradientStep(session, adamw, batch, lr!),
    tensors: () => adamw.stateTensors(),
    dispose: () => adamw.dispose(),
  };
}

function gradientStep(
  session: Extract<Session, { kind: 'gradients' }>,
  optimizer: AdamW,
  batch: Batch,
  lr: number,
): number {
  const { loss, grads } = session.lossAndGrads(batch);
  try {
    optimizer.apply(grads, lr);
    return loss.dataSync()[0]!;
  } finally {
    loss.dispose();
    for (const g of grads.values()) g.dispose();
  }
}

/** A program-owned optimizer: the session steps itself, or on W ranks applies the all-reduced gradients. */
function programStepper(session: StepSession, group: ProcessGroup | undefined): Optimizer {
  if (group && (!session.gradients || !session.applyGradients)) {
    throw new InvalidArgumentError(
      'the program owns its optimizer and its session has no gradients()/applyGradients(): it cannot train on ' +
        'several ranks; drop --nproc',
      { field: 'nproc' },
    );
  }
  return {
    step: async (batch) => {
      if (!group) return session.step(batch);
      const { loss, grads } = session.gradients!(batch);
      const names = [...grads.keys()].sort();
      const counts = names.map((n) => grads.get(n)!.length);
      const flat = new Float32Array(counts.reduce((a, b) => a + b, 0));
      let offset = 0;
      for (const [i, name] of names.entries()) {
        flat.set(grads.get(name)!, offset);
        offset += counts[i]!;
      }
      const mean = await group.allReduce(flat, 'mean');
      const averaged = new Map<string, Float32Array>();
      offset = 0;
      for (const [i, name] of names.entries()) {
        averaged.set(name, mean.subarray(offset, offset + counts[i]!));
        offset += counts[i]!;
      }
      session.applyGradients!(averaged, batch);
      return (await group.allReduce(new Float32Array([loss]), 'mean'))[0]!;
    },
    tensors: () => session.optimizerTensors(),
    dispose: () => undefined,
  };
}

/**
 * One data-parallel step with a ZeRO-1 optimizer: each rank computes gradients on its slice of the global
 * batch; gradients are reduce-scattered so each rank holds the mean gradient of the parameters it owns;
 * each rank updates those; the new values are all-gathered so every rank holds the whole model again.
 */
async function shardedStep(
  tf: TF,
  session: Extract<Session, { kind: 'gradients' }>,
  optimizer: AdamW,
  batch: Batch,
  lr: number,
  group: ProcessGroup,
  plan: ShardPlan,
): Promise<number> {
  const params = session.parameters();
  const flat = new Float32Array(plan.counts.reduce((a, b) => a + b, 0));
  let loss: number;
  tf.tidy(() => {
    const { loss: l, grads } = session.lossAndGrads(batch);
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
      file: manifestFile(step),
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

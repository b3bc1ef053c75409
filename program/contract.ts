/**
 * The training-program contract: the seam between the generic, resumable training loop (train/) and a
 * model. The loop owns everything that makes a run durable — the resume point (last committed, verified
 * step), the save cadence, async saves, cancellation at step boundaries, progress events, ranks, the sample
 * index and the bitwise-exact resume — and asks a program only for what is model-specific: its config, a
 * fresh or restored state, one step, the tensors and JSON for a checkpoint, and an evaluation.
 *
 * A program is a plain object; a module whose default export is one can be loaded by path
 * (`ckpt train --program ./my-program.ts`) or registered by name on workers. docs/programs.md has a whole
 * example. Every batch is described by global sample indices: a program whose data order is a pure
 * function of (seed, sample index) resumes exactly, because the loop records the index in every checkpoint.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Migration } from '../checkpoint/migrations';
import type { Meta } from '../checkpoint/manifest';
import type { Location } from '../checkpoint/location';
import type { NamedTensors } from '../checkpoint/tensors';

export type TF = typeof tfjs;
export type { NamedTensors, Tensor } from '../checkpoint/tensors';

/** JSON values: what a program may keep in a checkpoint's meta beside its tensors. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A program-specific `ckpt train` flag that sets one key of the program's config. */
export interface ProgramFlag {
  /** The config key the flag sets. */
  key: string;
  type: 'int' | 'number' | 'string';
  /** One line for `ckpt train --help`. */
  help: string;
  /** Smallest allowed value for int and number flags. */
  min?: number;
  /** A local file: made absolute where it is given, so that workers elsewhere find the same file. */
  path?: boolean;
  /**
   * The key may differ from the checkpoint being resumed (e.g. a data path whose content the program checks
   * itself). By default a flag that contradicts the checkpoint is refused, naming it.
   */
  mayChangeOnResume?: boolean;
}

/** The slice of training data one step of one rank consumes. */
export interface Batch {
  /** The step being taken, counted from 0 (the checkpoint written after it is step + 1). */
  step: number;
  /** First global sample index of this rank's slice. */
  start: number;
  /** Samples in this rank's slice. */
  count: number;
  /** The global batch: samples per step over all ranks. */
  batch: number;
}

/** What a restored session starts from: a committed checkpoint's tensors and JSON. */
export interface Restored {
  step: number;
  /** Model tensors, F32 (a checkpoint saved with --save-dtype bf16/f16 is converted on load). */
  model: NamedTensors;
  /** This rank's optimizer tensors (program-owned optimizers only; null when the loop owns it). */
  optimizer: NamedTensors | null;
  /** What the session's state() returned at that step (null when it has none). */
  state: Json;
  meta: Meta;
}

/** The loop's own settings, as recorded in every checkpoint's meta under `loop`. */
export interface LoopSettings {
  seed: number;
  /** Global batch (samples per step over all ranks). */
  batch: number;
  /** The learning-rate schedule, when the loop owns the optimizer. */
  schedule?: { kind: 'constant' | 'cosine'; lr: number; warmup: number; horizon: number };
}

export interface StartContext<C> {
  tf: TF;
  /** The backend that runs (`tensorflow`, `wasm`, `cpu`, ...). */
  backend: string;
  config: C;
  loop: LoopSettings;
  rank: number;
  worldSize: number;
  /** null: a fresh run, initialised from loop.seed. */
  restore: Restored | null;
  log(message: string): void;
}

interface SessionBase {
  /** The model's tensors under stable names (the checkpoint's model file). Fresh copies. */
  modelTensors(): NamedTensors;
  /** JSON the next step depends on beyond the tensors and the sample index; restored as Restored.state. */
  state?(): Json;
  /** Extra top-level meta keys (e.g. what an evaluation or an importer needs to rebuild the model). */
  meta?(loop: LoopSettings): Record<string, unknown>;
  dispose(): void;
}

/**
 * The loop owns the optimizer: AdamW with explicit state and the learning-rate schedule (`--lr`,
 * `--schedule`, `--warmup`, `--horizon`), ZeRO-1 sharded over ranks. The program gives its parameters and
 * a loss with gradients.
 */
export interface GradientSession extends SessionBase {
  readonly kind: 'gradients';
  /** The trainable variables under stable names; the order is the optimizer's and the shard plan's. */
  parameters(): Map<string, tfjs.Variable>;
  /** The mean loss of the batch and its gradient for every parameter (the caller disposes all). */
  lossAndGrads(batch: Batch): { loss: tfjs.Scalar; grads: Map<string, tfjs.Tensor> };
}

/**
 * The program owns its optimizer (e.g. `tf.train.adam` on a `tf.LayersModel`). With `gradients` and
 * `applyGradients` it also runs data-parallel: each rank computes gradients on its slice, the loop
 * all-reduces their mean, and every rank applies it to its replicated optimizer. Without them `--nproc` is
 * refused.
 */
export interface StepSession extends SessionBase {
  readonly kind: 'step';
  /** One optimisation step; returns the batch's mean loss. */
  step(batch: Batch): number | Promise<number>;
  /** The optimizer's state under stable names (the checkpoint's optim file; restored as Restored.optimizer). */
  optimizerTensors(): NamedTensors;
  gradients?(batch: Batch): { loss: number; grads: Map<string, Float32Array> };
  applyGradients?(grads: Map<string, Float32Array>, batch: Batch): void;
}

export type Session = GradientSession | StepSession;

export interface EvalContext<C> {
  tf: TF;
  backend: string;
  /** The checkpoint's model tensors (verified, F32). */
  loadModelTensors(): Promise<NamedTensors>;
  /** The checkpoint directory and step being evaluated. */
  dir: Location;
  step: number;
  meta: Meta;
  config: C;
  loop: LoopSettings;
  /** `ckpt eval --data FILE`, when given. */
  data?: string;
  onProgress?: (done: number, total: number) => void;
  log(message: string): void;
}

export interface SampleContext<C> extends Omit<EvalContext<C>, 'data' | 'onProgress'> {
  prompt: string;
  tokens: number;
  temperature: number;
  seed: number;
}

export interface TrainingProgram<C = Record<string, unknown>> {
  /** Recorded in every checkpoint's meta; a checkpoint is only resumed or built by the program that wrote it. */
  readonly name: string;
  /** An integer that grows when checkpoints change; older ones go through `migrations`, newer ones are refused. */
  readonly version: number;
  readonly description?: string;
  /** The primary metric `evaluate` returns, for eval-on-new-checkpoint, `--keep-best` and "best". */
  readonly metric: { name: string; mode: 'min' | 'max' };
  /** Who owns the optimizer: 'loop' (GradientSession) or 'program' (StepSession). */
  readonly optimizer: 'loop' | 'program';
  /** Program-specific flags of `ckpt train` and `ckpt pipeline start`, by flag name (without `--`). */
  readonly flags?: Record<string, ProgramFlag>;
  /** Global batch when `--batch` is not given. */
  readonly defaultBatch?: number;
  /**
   * Fill defaults and validate. `given` is what the user set (`--config` merged with the flags); on resume
   * it is laid over the checkpoint's config. Throw InvalidArgumentError (with `field`) on a bad value.
   */
  configure(given: Record<string, unknown>): C;
  /** The tag when `--tag` is not given; without one, `--tag` is required. */
  defaultTag?(config: C): string;
  /** A fresh state (restore === null, initialised from loop.seed) or one restored from a checkpoint. */
  start(context: StartContext<C>): Session | Promise<Session>;
  /** Evaluate a committed checkpoint: flat numbers, including `metric.name`. */
  evaluate(context: EvalContext<C>): Promise<Record<string, number>>;
  /** Generate from a checkpoint (`ckpt sample`). */
  sample?(context: SampleContext<C>): Promise<string>;
  /** Patches for checkpoints written by older versions (meta and model tensors), in order. */
  readonly migrations?: readonly Migration[];
}

const definedIn = new WeakMap<object, string>();

/**
 * `export default defineProgram({ ... })`: checks the object's type, and remembers the module that defined
 * it, so that a worker given the object (the plugin's `programs` option) can load it in a training child.
 */
export function defineProgram<C>(program: TrainingProgram<C>): TrainingProgram<C> {
  const file = callerFile();
  if (file) definedIn.set(program, file);
  return program;
}

/** The module that called defineProgram for this program, if known. */
export function definedModule(program: object): string | undefined {
  return definedIn.get(program);
}

function callerFile(): string | undefined {
  const stack = new Error().stack?.split('\n') ?? [];
  // [0] the message, [1] callerFile, [2] defineProgram, [3] its caller.
  const frame = stack[3] ?? '';
  const match = frame.match(/\(?((?:file:\/\/)?\/[^():]+):\d+:\d+\)?\s*$/);
  if (!match) return undefined;
  return match[1]!.startsWith('file://') ? decodeURIComponent(match[1]!.slice('file://'.length)) : match[1];
}

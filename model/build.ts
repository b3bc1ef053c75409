/**
 * The mid and high layers of the checkpoint API (nanochat's build_model / load_model), for TensorFlow.js.
 *
 * buildModel: read the checkpoint (verified), apply migrations (config patches, `_orig_mod.` / `module.`
 * prefixes, missing per-layer scalars), convert BF16/F16 to F32, check every name and shape in one pass,
 * check the tokenizer, then hand each tensor to the backend as it is adopted: no weight is randomly
 * initialised and then overwritten, and rotary tables are derived from the config, never loaded.
 *
 * loadModel: source → directory from the configured source map; tag defaults to the largest model, step to
 * the last committed and verified step; every guess is logged.
 */
import {
  findLargestModel,
  findLastStep,
  joinLocation,
  loadCheckpoint,
  log0,
  type Location,
  type Meta,
  MissingFileError,
  openStore,
  optimFile,
  readManifest,
  validateName,
  validateStep,
  InvalidArgumentError,
} from '../checkpoint';
import type * as tfjs from '@tensorflow/tfjs';
import { applyMigrations, metaFile, toFloat32 } from '../checkpoint';
import type { NamedTensors } from '../checkpoint/tensors';
import { initBackend, type BackendChoice } from './backend';
import { ProgramMismatchError } from '../program/errors';
import { recordedProgram } from '../program/meta';
// The GPT's checkpoint migrations, applied by every load below.
import './migrations';
import { GPT, normalizeConfig, type GPTConfig } from './gpt';
import { checkTokenizer, loadTokenizer, type Tokenizer } from './tokenizer';

type TfTensor = tfjs.Tensor;

export interface BuildOptions {
  phase?: 'train' | 'eval';
  backend?: BackendChoice;
  /** Verify every byte against the manifest (default true). */
  verify?: boolean;
  /** A tokenizer file to use instead of the one the meta records (its identity must match). */
  tokenizer?: string;
}

export interface BuiltModel {
  model: GPT;
  tokenizer: Tokenizer;
  meta: Meta;
  step: number;
  /** Migrations applied while loading. */
  migrations: string[];
}

export async function buildModel(
  dir: Location,
  step: number,
  options: BuildOptions = {},
): Promise<BuiltModel> {
  const { tf, name: backend } = await initBackend({ force: options.backend, log: (m) => log0(m) });
  // Each tensor goes to the backend as soon as it is read and verified chunk by chunk; the host copy is
  // dropped at once, so peak memory stays near one copy of the model.
  const adopted = new Map<string, TfTensor>();
  const shapes: NamedTensors = {};
  let checkpoint;
  try {
    checkpoint = await loadCheckpoint(dir, step, {
      loadOptimizer: false,
      verify: options.verify ?? true,
      // The wasm backend copies a new tensor into its own heap at once: the host buffer can be reused.
      transientModelTensors: backend === 'wasm',
      onModelTensor: (name, tensor) => {
        adopted.set(name, tf.tensor(toFloat32(tensor), [...tensor.shape], 'float32'));
        shapes[name] = { dtype: 'F32', shape: tensor.shape, data: new Float32Array(0) };
      },
    });
  } catch (err) {
    for (const t of adopted.values()) t.dispose();
    throw err;
  }
  try {
    const file = metaFile(step);
    const program = recordedProgram(checkpoint.meta);
    if (program.name !== 'gpt') {
      throw new ProgramMismatchError(
        `${file} was written by program "${program.name}"; buildModel builds the built-in GPT only ` +
          '(evaluate or sample it with --program)',
        { file, field: 'program', step },
      );
    }
    if (!checkpoint.meta.model_config) {
      throw new InvalidArgumentError(
        `${file}: no model_config: this checkpoint was not written by a model trainer`,
        {
          file,
          field: 'model_config',
          step,
        },
      );
    }
    // Tensor migrations rename keys and add missing ones; they run on placeholders, and the real tensors
    // follow their placeholders by identity.
    const byPlaceholder = new Map([...adopted].map(([name, t]) => [shapes[name], t] as const));
    const migrated = applyMigrations(checkpoint.meta, shapes);
    const tensors = new Map<string, TfTensor>();
    for (const [name, placeholder] of Object.entries(shapes)) {
      tensors.set(
        name,
        byPlaceholder.get(placeholder) ??
          tf.tensor(toFloat32(placeholder), [...placeholder.shape], 'float32'),
      );
    }
    const config = normalizeConfig(migrated.meta.model_config as Partial<GPTConfig>);
    const tokenizer = recordedTokenizer(migrated.meta, file, step, options.tokenizer);
    if (config.vocab_size < tokenizer.vocabSize) {
      throw new InvalidArgumentError(
        `${file}: model vocab_size ${config.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize}`,
        { file, field: 'model_config.vocab_size', step },
      );
    }
    let model: GPT;
    try {
      model = GPT.fromTensors(tf, config, tensors);
    } finally {
      // The variables hold their own references; ours can go.
      for (const t of tensors.values()) t.dispose();
    }
    if (options.phase === 'eval') for (const v of model.parameters().values()) v.trainable = false;
    const migrations = [...new Set([...checkpoint.migrations, ...migrated.applied])];
    return { model, tokenizer, meta: migrated.meta, step, migrations };
  } finally {
    for (const t of adopted.values()) if (!t.isDisposed) t.dispose();
  }
}

/** The tokenizer a checkpoint's meta records (the byte tokenizer when it records none), checked by identity. */
function recordedTokenizer(meta: Meta, file: string, step: number, override: string | undefined): Tokenizer {
  const recorded = meta.tokenizer as { kind?: unknown; path?: unknown } | undefined;
  let path = override;
  if (recorded?.kind === 'bpe' && path === undefined) {
    if (typeof recorded.path !== 'string') {
      throw new InvalidArgumentError(
        `${file}: the model's tokenizer is a BPE tokenizer, and the meta records no file for it`,
        { file, field: 'tokenizer.path', step },
      );
    }
    path = recorded.path;
  }
  const tokenizer = loadTokenizer(path);
  if (recorded !== undefined) checkTokenizer(recorded, tokenizer);
  return tokenizer;
}

export interface LoadModelOptions extends BuildOptions {
  /** Store root (a directory or s3://bucket/prefix). */
  root: string;
  /** Source name → directory under the root (from temporal.config.ts). */
  sources: Record<string, string>;
  tag?: string;
  step?: number;
}

/** Resolve source → directory, tag and step (guessing and logging what is not given), then build. */
export async function resolveCheckpoint(
  source: string,
  options: Pick<LoadModelOptions, 'root' | 'sources' | 'tag' | 'step'>,
): Promise<{ dir: string; tag: string; step: number }> {
  validateName(source, 'source');
  const sourceDir = options.sources[source];
  if (!sourceDir) {
    throw new InvalidArgumentError(
      `unknown source "${source}"; known sources: ${Object.keys(options.sources).join(', ')}`,
      { field: 'source' },
    );
  }
  const checkpointsDir = joinLocation(options.root, validateName(sourceDir, 'source directory'));
  let tag = options.tag;
  if (tag === undefined) {
    tag = await findLargestModel(checkpointsDir);
    log0(`no tag given: using the largest model, ${tag}`, { tag });
  }
  const dir = joinLocation(checkpointsDir, validateName(tag, 'tag'));
  let step = options.step;
  if (step === undefined) {
    step = await findLastStep(dir);
    log0(`no step given: using the last committed, verified step, ${step}`, { step });
  }
  return { dir, tag, step: validateStep(step) };
}

export async function loadModel(
  source: string,
  options: LoadModelOptions,
): Promise<BuiltModel & { dir: string; tag: string }> {
  const { dir, tag, step } = await resolveCheckpoint(source, options);
  return { ...(await buildModel(dir, step, options)), dir, tag };
}

/** This rank's optimizer shard, or null (logged) when the checkpoint has none for it. */
export async function loadOptimizerState(
  source: string,
  options: Pick<LoadModelOptions, 'root' | 'sources' | 'tag' | 'step'> & { rank?: number },
): Promise<NamedTensors | null> {
  const { dir, step } = await resolveCheckpoint(source, options);
  const rank = options.rank ?? 0;
  const manifest = await readManifest(openStore(dir), step);
  if (!manifest.files[optimFile(step, rank)]) {
    log0(`no optimizer shard ${optimFile(step, rank)} in ${dir}: starting the optimizer fresh`, {
      step,
      rank,
    });
    return null;
  }
  try {
    return (await loadCheckpoint(dir, step, { rank, loadModel: false })).optimizer;
  } catch (err) {
    if (err instanceof MissingFileError) {
      log0(`optimizer shard for rank ${rank} missing in ${dir}: ${err.message}`, { step, rank });
      return null;
    }
    throw err;
  }
}

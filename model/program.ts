/**
 * The built-in GPT as a training program (program/contract.ts): nanochat's model trained on a text file's
 * tokens (its bytes, or the ids of a nanochat tokenizer given with --tokenizer), with the loop's AdamW
 * (ZeRO-1 over ranks) and learning-rate schedule. Its checkpoints keep the keys nanochat-style tools and
 * `buildModel` read: `model_config`, `tokenizer`, `run` (with the data's identity) and `data`.
 */
import { resolve } from 'node:path';
import { InvalidArgumentError, registeredMigrations } from '../checkpoint';
import type { GradientSession, LoopSettings, TrainingProgram } from '../program/contract';
import { TextData, type DataIdentity } from '../train/data';
import { ConfigError } from './errors';
import { modelTag, normalizeConfig, type GPTConfig } from './config';
import './migrations';
import { Rng } from './random';
import { checkTokenizer, loadTokenizer, tokenizerRecord, type Tokenizer } from './tokenizer';

/**
 * The GPT's config: nanochat's model_config keys, the training text (absolute path; default corpus) and the
 * tokenizer file (absolute path; default the byte tokenizer).
 */
export type GPTProgramConfig = GPTConfig & { data?: string; tokenizer?: string };

function splitConfig(config: GPTProgramConfig): {
  model: GPTConfig;
  data: string | undefined;
  tokenizer: string | undefined;
} {
  const { data, tokenizer, ...model } = config;
  return { model, data, tokenizer };
}

/**
 * The model code loads tfjs (about 0.25 s): it is required when a run builds or loads a model, so that
 * reading this program's config and flags (`ckpt pipeline start`, `ckpt list`) does not pay for it.
 */
const gpt = () => require('./gpt') as typeof import('./gpt');
const build = () => require('./build') as typeof import('./build');

/** How many bytes of text target tokens stand for (the denominator of bits per byte). */
function targetByteCount(targets: Int32Array, tokenizer: Tokenizer): number {
  let bytes = 0;
  for (const id of targets) bytes += tokenizer.byteLength(id);
  return bytes;
}

/** The data a checkpoint was trained on, as its meta records it. */
function trainedOn(
  meta: Record<string, unknown>,
): { name: string; sha256: string; path?: string } | undefined {
  return (meta.run as { data?: { name: string; sha256: string; path?: string } } | undefined)?.data;
}

export const gptProgram: TrainingProgram<GPTProgramConfig> = {
  name: 'gpt',
  version: 2,
  description:
    "nanochat's GPT on a text file (--data) as bytes or nanochat tokens (--tokenizer), AdamW and a learning-rate schedule",
  metric: { name: 'val_bpb', mode: 'min' },
  optimizer: 'loop',
  defaultBatch: 8,
  flags: {
    depth: { key: 'n_layer', type: 'int', min: 1, help: 'layers (the tag defaults to d<depth>)' },
    'n-embd': { key: 'n_embd', type: 'int', min: 1, help: 'model width' },
    'n-head': { key: 'n_head', type: 'int', min: 1, help: 'attention heads (default: head_dim 16)' },
    'n-kv-head': { key: 'n_kv_head', type: 'int', min: 1, help: 'key/value heads (grouped-query attention)' },
    'seq-len': { key: 'sequence_len', type: 'int', min: 2, help: 'context length in tokens' },
    'window-pattern': {
      key: 'window_pattern',
      type: 'string',
      help: "per-layer attention: 'L' full, 'S' sliding",
    },
    data: {
      key: 'data',
      type: 'string',
      help: 'training text (default: the bundled corpus)',
      path: true,
      // A moved file is fine; its content is checked against the checkpoint's sha256.
      mayChangeOnResume: true,
    },
    tokenizer: {
      key: 'tokenizer',
      type: 'string',
      help: 'a nanochat tokenizer converted by scripts/nanochat-tokenizer.py (default: bytes)',
      path: true,
      // Checked against the checkpoint's tokenizer identity.
      mayChangeOnResume: true,
    },
  },
  get migrations() {
    return registeredMigrations().filter((m) => m.program === 'gpt');
  },

  configure(given) {
    const { data, tokenizer, ...model } = given as Record<string, unknown>;
    for (const [field, value] of Object.entries({ data, tokenizer })) {
      if (value !== undefined && typeof value !== 'string') {
        throw new ConfigError(`config ${field} must be a file path, got ${JSON.stringify(value)}`, { field });
      }
    }
    // A model for a tokenizer has its vocabulary unless the config says otherwise.
    if (tokenizer !== undefined && model.vocab_size === undefined) {
      model.vocab_size = loadTokenizer(tokenizer as string).vocabSize;
    }
    return {
      ...normalizeConfig(model as Partial<GPTConfig>),
      ...(data ? { data: resolve(data as string) } : {}),
      ...(tokenizer ? { tokenizer: resolve(tokenizer as string) } : {}),
    };
  },

  defaultTag: (config) => modelTag(config),

  start({ tf, config, loop, restore }): GradientSession {
    const { model: modelConfig, data: dataFile, tokenizer: tokenizerFile } = splitConfig(config);
    const tokenizer = loadTokenizer(tokenizerFile);
    if (restore?.meta.tokenizer !== undefined) checkTokenizer(restore.meta.tokenizer, tokenizer);
    const data = TextData.fromFile(
      dataFile,
      modelConfig.sequence_len,
      loop.seed,
      tokenizer.kind === 'bpe' ? (text) => tokenizer.encode(text) : undefined,
    );
    const recorded = restore ? trainedOn(restore.meta) : undefined;
    if (recorded && recorded.sha256 !== data.identity.sha256) {
      throw new InvalidArgumentError(
        `--data ${data.identity.name} (sha256 ${data.identity.sha256.slice(0, 12)}…) is not the data the checkpoint was ` +
          `trained on (${recorded.name}, sha256 ${recorded.sha256.slice(0, 12)}…)`,
        { field: 'data' },
      );
    }
    if (modelConfig.vocab_size < tokenizer.vocabSize) {
      throw new InvalidArgumentError(
        `vocab_size ${modelConfig.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize}`,
        { field: 'vocab_size' },
      );
    }
    const { GPT } = gpt();
    const model = restore
      ? GPT.fromNamedTensors(tf, modelConfig, restore.model)
      : GPT.initialize(tf, modelConfig, loop.seed);
    const T = modelConfig.sequence_len;
    // The path lets evaluation find the same held-out split later; the hash guards against a changed file.
    const identity: DataIdentity & { path?: string } = {
      ...data.identity,
      ...(dataFile ? { path: dataFile } : {}),
    };
    return {
      kind: 'gradients',
      parameters: () => model.parameters(),
      lossAndGrads(batch) {
        const { inputs, targets } = data.samples(batch.start, batch.count);
        const x = tf.tensor2d(inputs, [batch.count, T], 'int32');
        const y = tf.tensor2d(targets, [batch.count, T], 'int32');
        try {
          return model.lossAndGrads(x, y);
        } finally {
          x.dispose();
          y.dispose();
        }
      },
      modelTensors: () => model.namedTensors(),
      meta: (settings: LoopSettings) => ({
        model_config: modelConfig,
        run: {
          model: modelConfig,
          seed: settings.seed,
          batch: settings.batch,
          schedule: settings.schedule,
          data: identity,
        },
        tokenizer: tokenizerRecord(tokenizer, tokenizerFile),
        data: data.identity,
      }),
      dispose: () => model.dispose(),
    };
  },

  async evaluate({ tf, dir, step, data: dataOverride, backend, onProgress, log }) {
    const { model, meta, tokenizer } = await build().buildModel(dir, step, {
      phase: 'eval',
      backend: backend as never,
    });
    try {
      const run = meta.run as
        { seed: number; data: { name: string; sha256: string; path?: string } } | undefined;
      const data = TextData.fromFile(
        dataOverride ?? run?.data.path,
        model.config.sequence_len,
        run?.seed ?? 0,
        tokenizer.kind === 'bpe' ? (text) => tokenizer.encode(text) : undefined,
      );
      if (run && run.data.sha256 !== data.identity.sha256) {
        throw new InvalidArgumentError(
          `evaluation data ${data.identity.name} is not the data step ${step} was trained on (${run.data.name}); pass --data`,
          { field: 'data', step },
        );
      }
      const windows = data.heldOutWindows(64);
      let totalLoss = 0;
      let tokens = 0;
      let targetBytes = 0;
      const T = model.config.sequence_len;
      for (let i = 0; i < windows.length; i += 16) {
        const chunk = windows.slice(i, i + 16);
        const { inputs, targets } = data.heldOutBatch(chunk);
        const loss = tf.tidy(() => {
          const x = tf.tensor2d(inputs, [chunk.length, T], 'int32');
          const y = tf.tensor2d(targets, [chunk.length, T], 'int32');
          return model.loss(x, y).dataSync()[0]!;
        });
        totalLoss += loss * chunk.length * T;
        tokens += chunk.length * T;
        targetBytes += targetByteCount(targets, tokenizer);
        onProgress?.(i + chunk.length, windows.length);
      }
      const valLoss = totalLoss / tokens;
      // Bits per byte: the summed loss over the bytes the targets stand for. With the byte tokenizer each
      // target is one byte, so this is the loss in bits per token, computed as before.
      const valBpb = tokenizer.kind === 'byte' ? valLoss / Math.LN2 : totalLoss / Math.LN2 / targetBytes;
      log(
        `step ${step}: val_bpb ${valBpb.toFixed(4)} over ${tokens} held-out tokens (${data.identity.name})`,
      );
      return { val_bpb: valBpb, val_loss: valLoss, tokens };
    } finally {
      model.dispose();
    }
  },

  async sample({ tf, dir, step, prompt, tokens, temperature, seed, backend }) {
    const { model, tokenizer } = await build().buildModel(dir, step, {
      phase: 'eval',
      backend: backend as never,
    });
    try {
      const rng = new Rng(seed, 'sample');
      const ids = tokenizer.encode(prompt);
      const generated: number[] = [];
      const T = model.config.sequence_len;
      const vocab = tokenizer.vocabSize;
      for (let i = 0; i < tokens; i++) {
        const context = [...ids, ...generated].slice(-T);
        if (context.length === 0) context.push(tokenizer.bos);
        const logits = tf.tidy(() => {
          const x = tf.tensor2d(Int32Array.from(context), [1, context.length], 'int32');
          return model
            .logits(x)
            .slice([0, context.length - 1, 0], [1, 1, vocab])
            .dataSync() as Float32Array;
        });
        generated.push(temperature <= 0 ? argmax(logits) : draw(logits, temperature, rng));
      }
      return prompt + tokenizer.decode(generated);
    } finally {
      model.dispose();
    }
  },
};

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

function draw(logits: Float32Array, temperature: number, rng: Rng): number {
  const max = Math.max(...logits);
  const weights = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  let r = rng.uniform() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r <= 0) return i;
  }
  return weights.length - 1;
}

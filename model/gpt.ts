/**
 * A small GPT in tfjs that follows nanochat's model: token embedding, RMSNorm without parameters, rotary
 * position embeddings, QK norm, grouped-query attention with per-layer full or sliding windows, relu^2 MLP,
 * per-layer residual scalars (resid_lambdas, x0_lambdas), untied lm_head with a tanh logit softcap, no biases.
 *
 * Conventions:
 * - Parameter names and layout are nanochat's state_dict: matrices are [out_features, in_features]
 *   (PyTorch Linear, y = x @ W^T); see parameterShapes(). Variables are held in a Map under these stable
 *   names; the tfjs-level variable names get a per-instance prefix only to stay unique in the tfjs engine.
 * - Embedding lookup is one-hot @ wte (forward and gradient are plain matmuls). Chosen over tf.gather because
 *   the wasm backend lacks UnsortedSegmentSum (gather's gradient) and, measured on wasm for 512 tokens at
 *   vocab 257 x 64, one-hot fwd+bwd takes ~3.7 ms against ~4.6 ms for gather plus a registered JS scatter-add
 *   kernel; both are deterministic. Cost grows with the vocabulary: fine for bytes, revisit for a 50k BPE.
 * - Rotary tables and attention masks are derived from the config, computed lazily on first use, cached per
 *   sequence length and never parameters.
 * - Targets < 0 are ignored by loss() (nanochat's ignore_index=-1); the mean is over the other positions.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { elementCount, type NamedTensors } from '../checkpoint/tensors';
import { headDim, layerWindows, normalizeConfig, parameterShapes, type GPTConfig } from './config';
import { ModelInputError } from './errors';
import {
  attentionMask,
  linear,
  matmul,
  oneHotF32,
  rmsNorm,
  rotaryTables,
  rotate,
  type RotaryTables,
} from './ops';
import { normalArray, Rng, uniformArray } from './random';
import { checkTensorSet, f32Copy, toTfTensors } from './tensors';

export {
  DEFAULT_CONFIG,
  defaultHeads,
  headDim,
  layerWindows,
  modelTag,
  normalizeConfig,
  parameterShapes,
  type GPTConfig,
} from './config';

type TF = typeof tfjs;
type TfTensor = tfjs.Tensor;

/** nanochat's logit softcap: logits = 15 * tanh(logits / 15). */
export const LOGIT_SOFTCAP = 15;

let initCount = 0;
/** How many parameter tensors have been filled by the initializer so far (fromTensors fills none). */
export function initializerCalls(): number {
  return initCount;
}

let instanceCount = 0;

/**
 * nanochat's init, from an own PRNG stream per (seed, parameter name): wte ~ N(0, 1), lm_head ~ N(0, 0.001),
 * c_q/c_k/c_v/c_fc ~ U(-s, s) with s = sqrt(3/n_embd) (std 1/sqrt(n_embd), no outliers), every c_proj zero
 * (each block starts as the identity), resid_lambdas 1 and x0_lambdas 0 (neutral).
 */
function initialValues(
  name: string,
  shape: readonly number[],
  config: GPTConfig,
  seed: number,
): Float32Array {
  initCount++;
  const n = elementCount(shape);
  const rng = () => new Rng(seed, name);
  if (name === 'transformer.wte.weight') return normalArray(rng(), n, 1);
  if (name === 'lm_head.weight') return normalArray(rng(), n, 0.001);
  if (name === 'resid_lambdas') return new Float32Array(n).fill(1);
  if (name === 'x0_lambdas' || name.endsWith('.c_proj.weight')) return new Float32Array(n);
  return uniformArray(rng(), n, Math.sqrt(3 / config.n_embd));
}

export class GPT {
  private readonly rotary = new Map<number, RotaryTables>();
  private readonly masks = new Map<string, TfTensor>();
  private readonly windows: number[];
  private disposed = false;

  private constructor(
    private readonly tf: TF,
    readonly config: GPTConfig,
    private readonly params: Map<string, tfjs.Variable>,
  ) {
    this.windows = layerWindows(config);
  }

  /** Random init, bit-for-bit determined by (config, seed) on every backend. */
  static initialize(tf: TF, config: GPTConfig, seed: number): GPT {
    const cfg = normalizeConfig(config);
    if (!Number.isSafeInteger(seed)) throw new ModelInputError(`seed must be a safe integer, got ${seed}`);
    const shapes = parameterShapes(cfg);
    return GPT.adopt(tf, cfg, (name) => {
      const shape = shapes[name]!;
      return tf.tensor(initialValues(name, shape, cfg, seed), shape, 'float32');
    });
  }

  /**
   * Adopts the given float32 tensors as fresh variables (they share the immutable data; the caller keeps
   * ownership of, and may dispose, its tensors).
   * Runs no initializer. Checks the whole set first and throws one TensorSetMismatchError listing every
   * missing, unexpected and mis-shaped name.
   */
  static fromTensors(
    tf: TF,
    config: GPTConfig,
    tensors: Map<string, TfTensor> | Record<string, TfTensor>,
  ): GPT {
    const cfg = normalizeConfig(config);
    const given = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
    checkTensorSet(
      'model parameters',
      expectedSet(cfg, 'float32'),
      [...given].map(([n, t]) => [n, t]),
    );
    return GPT.adopt(tf, cfg, (name) => given.get(name)!);
  }

  /** fromTensors for checkpoint tensors (F32, little-endian); names and shapes are checked before any copy. */
  static fromNamedTensors(tf: TF, config: GPTConfig, named: NamedTensors): GPT {
    const cfg = normalizeConfig(config);
    checkTensorSet('model parameters', expectedSet(cfg, 'F32'), Object.entries(named));
    const tensors = toTfTensors(tf, named);
    try {
      return GPT.fromTensors(tf, cfg, tensors);
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  }

  private static adopt(tf: TF, config: GPTConfig, source: (name: string) => TfTensor): GPT {
    const prefix = `gpt${++instanceCount}/`;
    const params = new Map<string, tfjs.Variable>();
    tf.tidy(() => {
      for (const name of Object.keys(parameterShapes(config))) {
        params.set(name, tf.variable(source(name), true, prefix + name, 'float32'));
      }
    });
    return new GPT(tf, config, params);
  }

  /** The trainable variables under their stable names, in parameterShapes order. */
  parameters(): Map<string, tfjs.Variable> {
    return new Map(this.params);
  }

  numParams(): number {
    let n = 0;
    for (const v of this.params.values()) n += v.size;
    return n;
  }

  /** Next-token logits [B, T, vocab_size] for int32 tokens [B, T] (T <= sequence_len). */
  logits(tokens: tfjs.Tensor2D): tfjs.Tensor3D {
    const [B, T] = this.checkTokens(tokens, 'tokens');
    return this.tf.tidy(() => this.forward(tokens).reshape([B, T, this.config.vocab_size]));
  }

  /** Mean next-token cross-entropy in nats; targets int32 [B, T], entries < 0 are ignored. */
  loss(tokens: tfjs.Tensor2D, targets: tfjs.Tensor2D): tfjs.Scalar {
    const [B, T] = this.checkTokens(tokens, 'tokens');
    const [tb, tt] = this.checkTokens(targets, 'targets');
    if (tb !== B || tt !== T) {
      throw new ModelInputError(`targets shape [${tb},${tt}] differs from tokens shape [${B},${T}]`, {
        field: 'targets',
      });
    }
    const tf = this.tf;
    return tf.tidy(() => {
      const logp = tf.logSoftmax(this.forward(tokens));
      const onehot = oneHotF32(tf, targets.reshape([B * T]), this.config.vocab_size);
      const count = tf.maximum(tf.sum(onehot), 1);
      return tf.div(tf.neg(tf.sum(tf.mul(onehot, logp))), count) as tfjs.Scalar;
    });
  }

  /** The loss and its gradient for every parameter, keyed by the stable parameter names. */
  lossAndGrads(
    tokens: tfjs.Tensor2D,
    targets: tfjs.Tensor2D,
  ): { loss: tfjs.Scalar; grads: Map<string, TfTensor> } {
    const vars = [...this.params.values()];
    const { value, grads } = this.tf.variableGrads(() => this.loss(tokens, targets), vars);
    const out = new Map<string, TfTensor>();
    for (const [name, v] of this.params) {
      const g = grads[v.name];
      out.set(name, g ?? this.tf.zerosLike(v));
    }
    return { loss: value, grads: out };
  }

  /** F32 copies of every parameter, in parameterShapes order, for saving. */
  namedTensors(): NamedTensors {
    const out: NamedTensors = {};
    for (const [name, v] of this.params) out[name] = f32Copy(v);
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of this.params.values()) v.dispose();
    for (const { cos, sin, swap } of this.rotary.values()) this.tf.dispose([cos, sin, swap]);
    for (const m of this.masks.values()) m.dispose();
    this.rotary.clear();
    this.masks.clear();
  }

  private checkTokens(t: TfTensor, field: string): [number, number] {
    if (this.disposed) throw new ModelInputError('the model has been disposed');
    if (t.rank !== 2 || t.dtype !== 'int32') {
      throw new ModelInputError(`${field} must be an int32 [B, T] tensor, got ${t.dtype} [${t.shape}]`, {
        field,
      });
    }
    const [B, T] = t.shape as [number, number];
    if (T > this.config.sequence_len || T < 1 || B < 1) {
      throw new ModelInputError(
        `${field} length ${T} must be in 1..sequence_len (${this.config.sequence_len})`,
        {
          field,
        },
      );
    }
    return [B, T];
  }

  private p(name: string): TfTensor {
    const v = this.params.get(name);
    if (!v) throw new Error(`no parameter ${name}`);
    return v;
  }

  /** Logits [B*T, vocab] for tokens [B, T]. */
  private forward(tokens: tfjs.Tensor2D): TfTensor {
    const tf = this.tf;
    const [B, T] = tokens.shape;
    const { vocab_size: V, n_layer } = this.config;
    const onehot = oneHotF32(tf, tokens.reshape([B * T]), V);
    let x = rmsNorm(tf, matmul(tf, onehot, this.p('transformer.wte.weight')));
    const x0 = x;
    // slice, not unstack: tfjs's Unpack gradient fails when there is a single layer (one output).
    const lambda = (name: string, i: number) => tf.reshape(tf.slice(this.p(name), [i], [1]), []);
    for (let i = 0; i < n_layer; i++) {
      x = tf.add(tf.mul(x, lambda('resid_lambdas', i)), tf.mul(x0, lambda('x0_lambdas', i)));
      x = tf.add(x, this.attention(rmsNorm(tf, x), i, B, T));
      x = tf.add(x, this.mlp(rmsNorm(tf, x), i));
    }
    const logits = linear(tf, rmsNorm(tf, x), this.p('lm_head.weight'));
    return tf.mul(tf.tanh(tf.div(logits, LOGIT_SOFTCAP)), LOGIT_SOFTCAP);
  }

  private mlp(x: TfTensor, i: number): TfTensor {
    const tf = this.tf;
    const h = linear(tf, x, this.p(`transformer.h.${i}.mlp.c_fc.weight`));
    return linear(tf, tf.square(tf.relu(h)), this.p(`transformer.h.${i}.mlp.c_proj.weight`));
  }

  /** Causal self-attention on x [B*T, C]; returns [B*T, C]. */
  private attention(x: TfTensor, i: number, B: number, T: number): TfTensor {
    const tf = this.tf;
    const { n_head: H, n_kv_head: Hkv, n_embd: C } = this.config;
    const D = headDim(this.config);
    const rep = H / Hkv;
    const w = (n: string) => this.p(`transformer.h.${i}.attn.${n}.weight`);
    // [B*T, n*D] -> [B, n, T, D]
    const heads = (t: TfTensor, n: number) => tf.transpose(tf.reshape(t, [B, T, n, D]), [0, 2, 1, 3]);
    const rot = this.rotaryFor(T);
    const q = rmsNorm(tf, rotate(tf, heads(linear(tf, x, w('c_q')), H), rot));
    const k = rmsNorm(tf, rotate(tf, heads(linear(tf, x, w('c_k')), Hkv), rot));
    const v = heads(linear(tf, x, w('c_v')), Hkv);
    // GQA without copying k/v: the `rep` query heads of one kv head are stacked along the time axis, so
    // q [B*Hkv, rep*T, D] meets k, v [B*Hkv, T, D] and the mask rows repeat per head.
    const q3 = tf.reshape(q, [B * Hkv, rep * T, D]);
    const k3 = tf.reshape(k, [B * Hkv, T, D]);
    const v3 = tf.reshape(v, [B * Hkv, T, D]);
    const scores = tf.add(tf.mul(matmul(tf, q3, k3, false, true), 1 / Math.sqrt(D)), this.maskFor(T, i, rep));
    const y = matmul(tf, tf.softmax(scores), v3);
    const merged = tf.reshape(tf.transpose(tf.reshape(y, [B, H, T, D]), [0, 2, 1, 3]), [B * T, C]);
    return linear(tf, merged, w('c_proj'));
  }

  private rotaryFor(T: number): RotaryTables {
    let entry = this.rotary.get(T);
    if (!entry) {
      const tf = this.tf;
      const D = headDim(this.config);
      const { cos, sin, swap } = rotaryTables(T, D);
      // keep(): first use may happen inside a caller's tidy, but the tables are cached across calls.
      entry = {
        cos: tf.keep(tf.tensor2d(cos, [T, D])),
        sin: tf.keep(tf.tensor2d(sin, [T, D])),
        swap: tf.keep(tf.tensor2d(swap, [D, D])),
      };
      this.rotary.set(T, entry);
    }
    return entry;
  }

  private maskFor(T: number, layer: number, rep: number): TfTensor {
    const window = this.windows[layer] ?? Infinity;
    const key = `${T}:${window}:${rep}`;
    let mask = this.masks.get(key);
    if (!mask) {
      mask = this.tf.keep(this.tf.tensor2d(attentionMask(T, window, rep), [rep * T, T]));
      this.masks.set(key, mask);
    }
    return mask;
  }
}

function expectedSet(config: GPTConfig, dtype: string): Record<string, { shape: number[]; dtype: string }> {
  const out: Record<string, { shape: number[]; dtype: string }> = {};
  for (const [name, shape] of Object.entries(parameterShapes(config))) out[name] = { shape, dtype };
  return out;
}

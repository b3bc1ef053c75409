/**
 * A small GPT in tfjs that follows nanochat's model: token embedding, RMSNorm without parameters, rotary
 * position embeddings, QK norm, grouped-query attention with per-layer full or sliding windows, relu^2 MLP,
 * per-layer residual scalars (resid_lambdas, x0_lambdas), untied lm_head with a tanh logit softcap, no biases;
 * and, as the config's architecture constants say (config.ts), value embeddings, smear, backout, q/k scaling
 * and a vocabulary padded to a multiple (logits are cut back to vocab_size).
 *
 * Conventions:
 * - Parameter names and layout are nanochat's state_dict: matrices are [out_features, in_features]
 *   (PyTorch Linear, y = x @ W^T); see parameterShapes(). Variables are held in a Map under these stable
 *   names; the tfjs-level variable names get a per-instance prefix only to stay unique in the tfjs engine.
 * - Embedding lookup is one-hot @ wte (forward and gradient are plain matmuls). Chosen over tf.gather because
 *   the wasm backend lacks UnsortedSegmentSum (gather's gradient) and, measured on wasm for 512 tokens at
 *   vocab 257 x 64, one-hot fwd+bwd takes ~3.7 ms against ~4.6 ms for gather plus a registered JS scatter-add
 *   kernel; both are deterministic. Cost grows with the vocabulary, so logits() (no gradient) gathers rows
 *   instead: the same values (each one-hot product is one row times 1 plus exact zeros), without a
 *   [tokens, vocabulary] matrix, which for nanochat's 65536 tokens would not fit.
 * - Rotary tables and attention masks are derived from the config, computed lazily on first use, cached per
 *   sequence length and never parameters.
 * - Targets < 0 are ignored by loss() (nanochat's ignore_index=-1); the mean is over the other positions.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { elementCount, type NamedTensors } from '../checkpoint/tensors';
import {
  backoutLayer,
  hasValueEmbedding,
  headDim,
  layerWindows,
  normalizeConfig,
  paddedVocab,
  parameterShapes,
  gateWidths,
  type GPTConfig,
} from './config';
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
  ARCHITECTURES,
  DEFAULT_CONFIG,
  defaultHeads,
  headDim,
  LEGACY_ARCHITECTURE,
  NANOCHAT_ARCHITECTURE,
  paddedVocab,
  layerWindows,
  modelTag,
  normalizeConfig,
  parameterShapes,
  type GPTConfig,
} from './config';

type TF = typeof tfjs;
type TfTensor = tfjs.Tensor;

let initCount = 0;
/** How many parameter tensors have been filled by the initializer so far (fromTensors fills none). */
export function initializerCalls(): number {
  return initCount;
}

let instanceCount = 0;

/**
 * nanochat's init, from an own PRNG stream per (seed, parameter name): wte ~ N(0, 1), lm_head ~ N(0, 0.001),
 * c_q/c_k/c_v/c_fc ~ U(-s, s) with s = sqrt(3/n_embd) (std 1/sqrt(n_embd), no outliers), every c_proj zero
 * (each block starts as the identity), resid_lambdas 1 and x0_lambdas 0 (neutral); as nanochat 92d63d4 does
 * for the newer parameters: value embeddings like c_v, gates (ve_gate, smear_gate) ~ U(0, 0.02), smear_lambda 0
 * and backout_lambda 0.2.
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
  if (name === 'x0_lambdas' || name === 'smear_lambda' || name.endsWith('.c_proj.weight')) {
    return new Float32Array(n);
  }
  if (name === 'backout_lambda') return new Float32Array(n).fill(0.2);
  if (name === 'smear_gate.weight' || name.endsWith('.ve_gate.weight')) {
    return uniformArray(rng(), n, 0.01).map((v) => v + 0.01);
  }
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
    // Rows are gathered, and a gather past the table reads what is not there: refuse such ids.
    const V = this.config.vocab_size;
    const outside = (tokens.dataSync() as Int32Array).findIndex((id) => id < 0 || id >= V);
    if (outside >= 0) {
      throw new ModelInputError(
        `tokens: id ${tokens.dataSync()[outside]} is outside the vocabulary (0..${V - 1})`,
        {
          field: 'tokens',
        },
      );
    }
    return this.tf.tidy(() => this.forward(tokens, B, T, 'gather').reshape([B, T, this.config.vocab_size]));
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
      const logp = tf.logSoftmax(this.forward(tokens, B, T, 'one-hot'));
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

  /** Logits [B*T, vocab_size] for tokens [B, T]. */
  private forward(tokens: tfjs.Tensor2D, B: number, T: number, lookup: 'one-hot' | 'gather'): TfTensor {
    const tf = this.tf;
    const config = this.config;
    const ids = tokens.reshape([B * T]);
    const onehot = lookup === 'one-hot' ? oneHotF32(tf, ids, paddedVocab(config)) : null;
    const embed = (table: string) =>
      onehot ? matmul(tf, onehot, this.p(table)) : tf.gather(this.p(table), ids as tfjs.Tensor1D);
    let x = this.norm(embed('transformer.wte.weight'));
    if (config.smear && T > 1) x = this.smear(x, B, T);
    const x0 = x;
    // slice, not unstack: tfjs's Unpack gradient fails when there is a single layer (one output).
    const lambda = (name: string, i: number) => tf.reshape(tf.slice(this.p(name), [i], [1]), []);
    let backout: TfTensor | undefined;
    for (let i = 0; i < config.n_layer; i++) {
      x = tf.add(tf.mul(x, lambda('resid_lambdas', i)), tf.mul(x0, lambda('x0_lambdas', i)));
      const ve = hasValueEmbedding(config, i) ? embed(`value_embeds.${i}.weight`) : null;
      x = tf.add(x, this.attention(this.norm(x), i, B, T, ve));
      x = tf.add(x, this.mlp(this.norm(x), i));
      if (config.backout && i === backoutLayer(config)) backout = x;
    }
    if (backout) x = tf.sub(x, tf.mul(this.p('backout_lambda'), backout));
    let logits = linear(tf, this.norm(x), this.p('lm_head.weight'));
    if (paddedVocab(config) !== config.vocab_size)
      logits = tf.slice(logits, [0, 0], [B * T, config.vocab_size]);
    const cap = config.logit_softcap;
    return tf.mul(tf.tanh(tf.div(logits, cap)), cap);
  }

  private norm(x: TfTensor): TfTensor {
    return rmsNorm(this.tf, x, this.config.norm_eps);
  }

  /** x[t] += smear_lambda * sigmoid(smear_gate(x[t][:24])) * x[t-1] for t >= 1, on x [B*T, C]. */
  private smear(x: TfTensor, B: number, T: number): TfTensor {
    const tf = this.tf;
    const C = this.config.n_embd;
    const x3 = tf.reshape(x, [B, T, C]);
    const previous = tf.slice(x3, [0, 0, 0], [B, T - 1, C]);
    const current = tf.slice(x3, [0, 1, 0], [B, T - 1, C]);
    const G = gateWidths(this.config).smear;
    const gateInput = tf.reshape(tf.slice(current, [0, 0, 0], [B, T - 1, G]), [B * (T - 1), G]);
    const gate = tf.mul(
      this.p('smear_lambda'),
      tf.sigmoid(linear(tf, gateInput, this.p('smear_gate.weight'))),
    );
    const mixed = tf.add(current, tf.mul(tf.reshape(gate, [B, T - 1, 1]), previous));
    const first = tf.slice(x3, [0, 0, 0], [B, 1, C]);
    return tf.reshape(tf.concat([first, mixed], 1), [B * T, C]);
  }

  private mlp(x: TfTensor, i: number): TfTensor {
    const tf = this.tf;
    const h = linear(tf, x, this.p(`transformer.h.${i}.mlp.c_fc.weight`));
    return linear(tf, tf.square(tf.relu(h)), this.p(`transformer.h.${i}.mlp.c_proj.weight`));
  }

  /** Causal self-attention on x [B*T, C], with the layer's value embedding ve [B*T, kv] if any; returns [B*T, C]. */
  private attention(x: TfTensor, i: number, B: number, T: number, ve: TfTensor | null): TfTensor {
    const tf = this.tf;
    const { n_head: H, n_kv_head: Hkv, n_embd: C, qk_scale } = this.config;
    const D = headDim(this.config);
    const rep = H / Hkv;
    const w = (n: string) => this.p(`transformer.h.${i}.attn.${n}.weight`);
    // [B*T, n*D] -> [B, n, T, D]
    const heads = (t: TfTensor, n: number) => tf.transpose(tf.reshape(t, [B, T, n, D]), [0, 2, 1, 3]);
    const rot = this.rotaryFor(T);
    let q = this.norm(rotate(tf, heads(linear(tf, x, w('c_q')), H), rot));
    let k = this.norm(rotate(tf, heads(linear(tf, x, w('c_k')), Hkv), rot));
    if (qk_scale !== 1) {
      q = tf.mul(q, qk_scale);
      k = tf.mul(k, qk_scale);
    }
    let vFlat = linear(tf, x, w('c_v'));
    if (ve) {
      // Value residual: v += gate * ve, one gate per kv head, read from the first channels of the input.
      const G = gateWidths(this.config).valueEmbedding;
      const { ve_gate_scale } = this.config;
      const gate = tf.mul(
        tf.sigmoid(linear(tf, tf.slice(x, [0, 0], [B * T, G]), w('ve_gate'))),
        ve_gate_scale,
      );
      const gated = tf.mul(tf.reshape(ve, [B * T, Hkv, D]), tf.reshape(gate, [B * T, Hkv, 1]));
      vFlat = tf.add(vFlat, tf.reshape(gated, [B * T, Hkv * D]));
    }
    const v = heads(vFlat, Hkv);
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
      const { cos, sin, swap } = rotaryTables(
        T,
        D,
        this.config.rotary_base,
        this.config.rotary_dtype === 'bfloat16',
      );
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

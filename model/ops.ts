/**
 * The few tensor ops the GPT needs beyond plain tfjs, chosen for speed on the wasm backend.
 *
 * Why a matmul wrapper: tfjs-backend-wasm runs BatchMatMul with a transposed operand 10-20x slower than an
 * explicit Transpose followed by a plain BatchMatMul (measured on [512,64]x[64,256]: ~12 ms vs ~1.1 ms), and
 * tfjs's own MatMul gradient always uses transposed operands. On wasm we therefore transpose explicitly and give
 * the product a custom gradient that does the same. Other backends handle transposes natively and use tf.matMul.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { bf16BitsToF32, f32ToBf16Bits } from '../checkpoint/dtype';

type TF = typeof tfjs;
type TfTensor = tfjs.Tensor;

/** Swap the last two axes of a rank-2 or rank-3 tensor. */
function swapLast(tf: TF, x: TfTensor): TfTensor {
  return x.rank === 2 ? tf.transpose(x) : tf.transpose(x, [0, 2, 1]);
}

let wasmProduct: ((a: TfTensor, b: TfTensor) => TfTensor) | undefined;

function plainProduct(tf: TF): (a: TfTensor, b: TfTensor) => TfTensor {
  wasmProduct ??= tf.customGrad(((a: TfTensor, b: TfTensor, save: tfjs.GradSaveFunc) => {
    save([a, b]);
    return {
      value: tf.matMul(a, b),
      // d(a@b)/da = dy @ b^T, d(a@b)/db = a^T @ dy, with explicit transposes.
      gradFunc: (dy: TfTensor, saved: TfTensor[]) => {
        const [sa, sb] = saved as [TfTensor, TfTensor];
        return [tf.matMul(dy, swapLast(tf, sb)), tf.matMul(swapLast(tf, sa), dy)];
      },
    };
  }) as unknown as Parameters<TF['customGrad']>[0]);
  return wasmProduct;
}

/** a @ b (rank 2 or batched rank 3), optionally with either operand transposed. Deterministic. */
export function matmul(tf: TF, a: TfTensor, b: TfTensor, transposeA = false, transposeB = false): TfTensor {
  if (tf.getBackend() !== 'wasm') return tf.matMul(a, b, transposeA, transposeB);
  return plainProduct(tf)(transposeA ? swapLast(tf, a) : a, transposeB ? swapLast(tf, b) : b);
}

/** PyTorch-style Linear without bias: x [N, in] @ W^TfTensor for W stored as [out, in]. */
export function linear(tf: TF, x: TfTensor, w: TfTensor): TfTensor {
  return matmul(tf, x, w, false, true);
}

/**
 * One-hot rows as float32. Built as int32 then cast: tfjs-backend-wasm 4.22's OneHot kernel ignores the dtype
 * attribute and writes int32 bits into a float32 tensor (1 reads back as 1.4e-45).
 */
export function oneHotF32(tf: TF, indices: TfTensor, depth: number): TfTensor {
  return tf.cast(tf.oneHot(indices as tfjs.Tensor1D, depth), 'float32');
}

/** RMSNorm over the last axis, no learnable scale (as nanochat); eps is the model's norm_eps. */
export function rmsNorm(tf: TF, x: TfTensor, eps: number): TfTensor {
  return tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps)));
}

/**
 * Rotary embedding on x [B, heads, T, D] (nanochat's half-split convention): the pair (x[i], x[i + D/2]) is
 * rotated by angle pos * freq_i, i.e. y = x * [cos, cos] + [x2, -x1] * [sin, sin]. The swap-and-negate
 * [x2, -x1] is a product with a fixed signed permutation matrix (exact: one +-1 per column), which on wasm is
 * ~20x cheaper than split + concat along the last axis. Tables are [T, D]: [cos, cos], [sin, sin], `swap` [D, D].
 */
export function rotate(tf: TF, x: TfTensor, tables: RotaryTables): TfTensor {
  const D = x.shape[3]!;
  const swapped = tf.reshape(matmul(tf, tf.reshape(x, [-1, D]), tables.swap), x.shape);
  return tf.add(tf.mul(x, tables.cos), tf.mul(swapped, tables.sin));
}

export interface RotaryTables {
  cos: TfTensor;
  sin: TfTensor;
  swap: TfTensor;
}

/**
 * Rotary tables for positions 0..T-1 (base: the model's rotary_base), computed in float64 and rounded once
 * (to float32, or on to bfloat16 as nanochat stored them before 2026-03-04): cos and sin [T, D]
 * with each half repeated, and the [D, D] matrix mapping [x1, x2] to [x2, -x1].
 */
export function rotaryTables(T: number, headDim: number, base: number, bfloat16 = false) {
  const half = headDim / 2;
  const cos = new Float32Array(T * headDim);
  const sin = new Float32Array(T * headDim);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t / Math.pow(base, (2 * i) / headDim);
      cos[t * headDim + i] = cos[t * headDim + half + i] = Math.cos(angle);
      sin[t * headDim + i] = sin[t * headDim + half + i] = Math.sin(angle);
    }
  }
  if (bfloat16) {
    for (const table of [cos, sin]) table.forEach((v, i) => (table[i] = bf16BitsToF32(f32ToBf16Bits(v))));
  }
  const swap = new Float32Array(headDim * headDim);
  for (let j = 0; j < half; j++) {
    swap[(j + half) * headDim + j] = 1; // out[j] = x[j + half]
    swap[j * headDim + j + half] = -1; // out[j + half] = -x[j]
  }
  return { cos, sin, swap };
}

/** A large negative number rather than -Infinity, so fully masked math never produces NaN in gradients. */
const MASKED = -1e9;

/**
 * Additive attention mask [rep*T, T] for `rep` query heads sharing one kv head (rows are repeated per head):
 * query t sees key j when j <= t and t - j <= window (window = Infinity: full causal attention).
 */
export function attentionMask(T: number, window: number, rep: number): Float32Array {
  const out = new Float32Array(rep * T * T);
  for (let r = 0; r < rep; r++) {
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < T; j++) {
        if (j > t || t - j > window) out[(r * T + t) * T + j] = MASKED;
      }
    }
  }
  return out;
}

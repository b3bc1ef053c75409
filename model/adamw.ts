/**
 * AdamW (decoupled weight decay, bias correction; the update rule of torch.optim.AdamW) with its state held
 * explicitly, so it can be checkpointed and restored bit-for-bit:
 *   per parameter  `<param>.exp_avg` (m) and `<param>.exp_avg_sq` (v), F32, same shape as the parameter;
 *   `step`         the number of updates applied, an I64 scalar.
 *
 * Weight decay applies only to matrices (rank 2) other than the embedding tables: the per-layer scalar vectors
 * (resid_lambdas, x0_lambdas, ...), the token embedding and the value embeddings are not decayed; lm_head is a
 * matrix and is decayed.
 *
 * `owned` restricts which parameters this instance updates and keeps state for (one shard of a multi-rank
 * run); gradients for parameters it does not own are ignored. Every op is elementwise in float32 with the
 * scalar coefficients computed in float64 on the host, so the same inputs give the same bits.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { NamedTensors } from '../checkpoint/tensors';
import { ModelInputError, TensorSetMismatchError, type ShapeMismatch } from './errors';
import { checkTensorSet, f32Copy, i64Scalar, readF32, readI64Scalar, type ExpectedTensor } from './tensors';

type TF = typeof tfjs;

export interface AdamWOptions {
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.95 (as nanochat's AdamW groups). */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay coefficient (multiplied by lr), default 0 (nanochat's default). */
  weightDecay?: number;
  /** Parameter names this instance updates; default all. */
  owned?: string[];
}

export const STEP_KEY = 'step';
export const expAvgKey = (param: string) => `${param}.exp_avg`;
export const expAvgSqKey = (param: string) => `${param}.exp_avg_sq`;

/** Whether weight decay applies to a parameter: matrices only, never an embedding table. */
export function decays(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && name !== 'transformer.wte.weight' && !name.startsWith('value_embeds.');
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly owned: readonly string[];
  private readonly m = new Map<string, tfjs.Tensor>();
  private readonly v = new Map<string, tfjs.Tensor>();
  private steps = 0;

  constructor(
    private readonly tf: TF,
    private readonly params: Map<string, tfjs.Variable>,
    options: AdamWOptions = {},
  ) {
    this.beta1 = checkRange('beta1', options.beta1 ?? 0.9, 0, 1, true);
    this.beta2 = checkRange('beta2', options.beta2 ?? 0.95, 0, 1, true);
    this.eps = checkRange('eps', options.eps ?? 1e-8, 0, Infinity);
    this.weightDecay = checkRange('weightDecay', options.weightDecay ?? 0, 0, Infinity, true);
    const owned = options.owned ?? [...params.keys()];
    const unknown = owned.filter((n) => !params.has(n));
    if (unknown.length > 0) {
      throw new ModelInputError(`owned names no parameter: ${unknown.join(', ')}`, { field: 'owned' });
    }
    // Keep the model's parameter order, whatever order `owned` came in.
    this.owned = [...params.keys()].filter((n) => owned.includes(n));
    for (const name of this.owned) {
      const p = params.get(name)!;
      this.m.set(name, tf.keep(tf.zerosLike(p)));
      this.v.set(name, tf.keep(tf.zerosLike(p)));
    }
  }

  /**
   * Restores state saved by stateTensors(). Checks the whole set first (one TensorSetMismatchError listing
   * every missing, unexpected, mis-shaped or mis-typed name) for the parameters this instance owns.
   */
  static fromState(
    tf: TF,
    params: Map<string, tfjs.Variable>,
    tensors: NamedTensors,
    options: AdamWOptions = {},
  ): AdamW {
    const opt = new AdamW(tf, params, options);
    try {
      const expected: Record<string, ExpectedTensor> = { [STEP_KEY]: { shape: [], dtype: 'I64' } };
      for (const name of opt.owned) {
        const shape = params.get(name)!.shape;
        expected[expAvgKey(name)] = { shape, dtype: 'F32' };
        expected[expAvgSqKey(name)] = { shape, dtype: 'F32' };
      }
      checkTensorSet('optimizer state', expected, Object.entries(tensors));
      const step = readI64Scalar(tensors[STEP_KEY]!, STEP_KEY);
      if (step < 0)
        throw new ModelInputError(`optimizer step must be >= 0, got ${step}`, { field: STEP_KEY });
      opt.steps = step;
      for (const name of opt.owned) {
        const shape = [...params.get(name)!.shape];
        for (const [map, key] of [
          [opt.m, expAvgKey(name)],
          [opt.v, expAvgSqKey(name)],
        ] as const) {
          map.get(name)!.dispose();
          map.set(name, tf.keep(tf.tensor(readF32(tensors[key]!, key), shape, 'float32')));
        }
      }
      return opt;
    } catch (err) {
      opt.dispose();
      throw err;
    }
  }

  /** Number of updates applied so far. */
  get step(): number {
    return this.steps;
  }

  /** One AdamW update of every owned parameter from `grads` (keyed by parameter name). */
  apply(grads: Map<string, tfjs.Tensor>, lr: number): void {
    checkRange('lr', lr, 0, Infinity, true);
    this.checkGrads(grads);
    const tf = this.tf;
    const t = this.steps + 1;
    const stepSize = lr / (1 - Math.pow(this.beta1, t));
    const bc2Sqrt = Math.sqrt(1 - Math.pow(this.beta2, t));
    for (const name of this.owned) {
      const p = this.params.get(name)!;
      const g = grads.get(name)!;
      const [m, v] = tf.tidy(() => {
        const m = tf.add(tf.mul(this.m.get(name)!, this.beta1), tf.mul(g, 1 - this.beta1));
        const v = tf.add(tf.mul(this.v.get(name)!, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), this.eps);
        const decayed =
          this.weightDecay > 0 && decays(name, p.shape) ? tf.mul(p, 1 - lr * this.weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)));
        return [m, v];
      });
      this.m.get(name)!.dispose();
      this.v.get(name)!.dispose();
      this.m.set(name, m);
      this.v.set(name, v);
    }
    this.steps = t;
  }

  /** F32 copies of m and v for every owned parameter (model order) and the step as an I64 scalar. */
  stateTensors(): NamedTensors {
    const out: NamedTensors = {};
    for (const name of this.owned) {
      out[expAvgKey(name)] = f32Copy(this.m.get(name)!);
      out[expAvgSqKey(name)] = f32Copy(this.v.get(name)!);
    }
    out[STEP_KEY] = i64Scalar(this.steps);
    return out;
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
    this.m.clear();
    this.v.clear();
  }

  private checkGrads(grads: Map<string, tfjs.Tensor>): void {
    const missing = this.owned.filter((n) => !grads.has(n));
    const unexpected = [...grads.keys()].filter((n) => !this.params.has(n));
    const mismatched: ShapeMismatch[] = [];
    for (const name of this.owned) {
      const g = grads.get(name);
      const p = this.params.get(name)!;
      if (g && (g.shape.length !== p.shape.length || g.shape.some((d, i) => d !== p.shape[i]))) {
        mismatched.push({ name, expected: p.shape, actual: g.shape });
      } else if (g && g.dtype !== 'float32') {
        mismatched.push({ name, expected: 'float32', actual: g.dtype });
      }
    }
    if (missing.length + unexpected.length + mismatched.length > 0) {
      throw new TensorSetMismatchError('gradients', missing, unexpected, mismatched);
    }
  }
}

/** value must be finite, above lo (or equal when loInclusive) and below hi. */
function checkRange(field: string, value: number, lo: number, hi: number, loInclusive = false): number {
  const aboveLo = loInclusive ? value >= lo : value > lo;
  if (!Number.isFinite(value) || !aboveLo || !(value < hi)) {
    throw new ModelInputError(
      `AdamW ${field} must be in ${loInclusive ? '[' : '('}${lo}, ${hi}), got ${value}`,
      {
        field,
      },
    );
  }
  return value;
}

import { f32Tensor, type NamedTensors } from '../../checkpoint';

/** Small deterministic model and optimizer tensors whose values depend on `seed`. */
export function tinyModel(seed = 1, size = 6): NamedTensors {
  const values = (n: number, offset: number) =>
    Array.from({ length: n }, (_, i) => Math.sin(seed * 7 + i + offset));
  return {
    'transformer.wte.weight': f32Tensor([size, 4], values(size * 4, 0)),
    'lm_head.weight': f32Tensor([4, size], values(size * 4, 100)),
    resid_lambdas: f32Tensor([2], [1, 1]),
    x0_lambdas: f32Tensor([2], [0, 0]),
  };
}

export function tinyOptimizer(seed = 1, rank = 0): NamedTensors {
  return {
    'transformer.wte.weight.exp_avg': f32Tensor([3], [seed, rank, 0.5]),
    step: f32Tensor([], [seed]),
  };
}

export const tinyConfig = {
  n_layer: 2,
  n_head: 1,
  n_kv_head: 1,
  n_embd: 4,
  vocab_size: 6,
  sequence_len: 8,
  window_pattern: 'L',
};

export function tinyMeta(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model_config: { ...tinyConfig }, ...extra };
}

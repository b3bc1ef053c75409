/**
 * GPT config with nanochat's keys, its defaults (sized so the demo trains visibly in seconds on 2 CPU cores),
 * validation, and the exact parameter names and shapes the model has.
 */
import { ConfigError } from './errors';

export interface GPTConfig {
  sequence_len: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_kv_head: number;
  n_embd: number;
  /** Per layer, tiled: 'L' = full causal attention, 'S' = causal sliding window of sequence_len/2 tokens. */
  window_pattern: string;
}

/** Head size the n_head default aims for: small, because the default models are small. */
export const DEFAULT_HEAD_DIM = 16;

/**
 * Default demo model ("d2"): 2 layers, 64 wide, 4 heads of 16, 64 tokens of context, byte vocabulary plus BOS.
 * About 0.13M parameters; one step on a batch of 8 takes tens of milliseconds on the wasm backend.
 */
export const DEFAULT_CONFIG: Readonly<GPTConfig> = Object.freeze({
  sequence_len: 64,
  vocab_size: 257,
  n_layer: 2,
  n_head: 4,
  n_kv_head: 4,
  n_embd: 64,
  window_pattern: 'L',
});

const INT_KEYS = ['sequence_len', 'vocab_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd'] as const;
const KEYS: readonly string[] = [...INT_KEYS, 'window_pattern'];

/**
 * The default number of heads for a width: as many heads as keep head_dim >= 16 and even (rotary rotates
 * pairs), i.e. n_embd/16 when that divides; otherwise the largest such count, and 1 as a last resort.
 */
export function defaultHeads(n_embd: number): number {
  for (let h = Math.max(1, Math.floor(n_embd / DEFAULT_HEAD_DIM)); h > 1; h--) {
    if (n_embd % h === 0 && (n_embd / h) % 2 === 0) return h;
  }
  return 1;
}

/**
 * Fills defaults and validates. n_head defaults to defaultHeads(n_embd) (4 for the default width 64) and
 * n_kv_head to n_head (plain multi-head attention; fewer kv heads = grouped-query attention). Unknown keys are
 * rejected so typos surface; every error is a ConfigError whose `field` names the offending key.
 */
export function normalizeConfig(partial: Partial<GPTConfig> = {}): GPTConfig {
  const given = partial as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!KEYS.includes(key)) throw new ConfigError(`unknown model config key '${key}'`, { field: key });
  }
  for (const key of INT_KEYS) {
    const v = given[key];
    if (v !== undefined && !(typeof v === 'number' && Number.isSafeInteger(v) && v >= 1)) {
      throw new ConfigError(`model config ${key} must be a positive integer, got ${JSON.stringify(v)}`, {
        field: key,
      });
    }
  }
  const wp = given.window_pattern;
  if (wp !== undefined && !(typeof wp === 'string' && /^[SL]+$/.test(wp))) {
    throw new ConfigError(
      `model config window_pattern must be a non-empty string of 'S' and 'L', got ${JSON.stringify(wp)}`,
      { field: 'window_pattern' },
    );
  }
  const n_embd = partial.n_embd ?? DEFAULT_CONFIG.n_embd;
  const n_head = partial.n_head ?? defaultHeads(n_embd);
  const config: GPTConfig = {
    sequence_len: partial.sequence_len ?? DEFAULT_CONFIG.sequence_len,
    vocab_size: partial.vocab_size ?? DEFAULT_CONFIG.vocab_size,
    n_layer: partial.n_layer ?? DEFAULT_CONFIG.n_layer,
    n_head,
    n_kv_head: partial.n_kv_head ?? n_head,
    n_embd,
    window_pattern: partial.window_pattern ?? DEFAULT_CONFIG.window_pattern,
  };
  if (config.n_embd % config.n_head !== 0) {
    throw new ConfigError(
      `model config n_embd (${config.n_embd}) must be divisible by n_head (${config.n_head})`,
      {
        field: 'n_head',
      },
    );
  }
  if (config.n_head % config.n_kv_head !== 0) {
    throw new ConfigError(
      `model config n_head (${config.n_head}) must be divisible by n_kv_head (${config.n_kv_head})`,
      { field: 'n_kv_head' },
    );
  }
  if (headDim(config) % 2 !== 0) {
    throw new ConfigError(
      `model config head_dim = n_embd/n_head = ${headDim(config)} must be even (rotary embeddings rotate pairs)`,
      { field: 'n_head' },
    );
  }
  return config;
}

export function headDim(config: GPTConfig): number {
  return config.n_embd / config.n_head;
}

/** nanochat's model tag: 'd' + depth. */
export function modelTag(config: Pick<GPTConfig, 'n_layer'>): string {
  return `d${config.n_layer}`;
}

/**
 * Attention window (in tokens before the current one) per layer: the pattern is tiled over the layers and
 * the last layer always gets full context, as in nanochat. Infinity = full causal attention.
 */
export function layerWindows(config: GPTConfig): number[] {
  const short = Math.floor(config.sequence_len / 2);
  const out: number[] = [];
  for (let i = 0; i < config.n_layer; i++) {
    const ch = config.window_pattern[i % config.window_pattern.length];
    out.push(ch === 'S' && i !== config.n_layer - 1 ? short : Infinity);
  }
  return out;
}

/**
 * Every parameter's name and shape, in a fixed order. Matrices are stored PyTorch-Linear style as
 * [out_features, in_features] (y = x @ W^T), so the tensors map 1:1 onto nanochat's state_dict.
 */
export function parameterShapes(config: GPTConfig): Record<string, number[]> {
  const { n_embd: C, vocab_size: V, n_layer: L, n_kv_head } = config;
  const kv = n_kv_head * headDim(config);
  const shapes: Record<string, number[]> = { 'transformer.wte.weight': [V, C] };
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    shapes[`${p}.attn.c_q.weight`] = [C, C];
    shapes[`${p}.attn.c_k.weight`] = [kv, C];
    shapes[`${p}.attn.c_v.weight`] = [kv, C];
    shapes[`${p}.attn.c_proj.weight`] = [C, C];
    shapes[`${p}.mlp.c_fc.weight`] = [4 * C, C];
    shapes[`${p}.mlp.c_proj.weight`] = [C, 4 * C];
  }
  shapes['lm_head.weight'] = [V, C];
  shapes['resid_lambdas'] = [L];
  shapes['x0_lambdas'] = [L];
  return shapes;
}

/**
 * GPT config with nanochat's keys, its defaults (sized so the demo trains visibly in seconds on 2 CPU cores),
 * validation, and the exact parameter names and shapes the model has.
 */
import { ConfigError } from './errors';

/** The model's size: nanochat's GPTConfig keys. */
export interface GPTShape {
  sequence_len: number;
  vocab_size: number;
  n_layer: number;
  n_head: number;
  n_kv_head: number;
  n_embd: number;
  /** Per layer, tiled: 'L' = full causal attention, 'S' = causal sliding window (see short_window). */
  window_pattern: string;
}

/** How long the window of an 'S' layer is, as a function of sequence_len (L). */
export const SHORT_WINDOW_RULES = {
  /** floor(L/2). */
  half: (L: number) => Math.floor(L / 2),
  /** ceil(L/384)*128: a third of L rounded up to FA3's tile of 128. */
  'third-ceil128': (L: number) => Math.ceil(L / 384) * 128,
  /** ceil(L/512)*128: a quarter of L rounded up to FA3's tile of 128. */
  'quarter-ceil128': (L: number) => Math.ceil(L / 512) * 128,
} as const;
export type ShortWindowRule = keyof typeof SHORT_WINDOW_RULES;

export const ROTARY_DTYPES = ['float32', 'bfloat16'] as const;
export type RotaryDtype = (typeof ROTARY_DTYPES)[number];

/**
 * The architecture's constants that no tensor carries. A checkpoint records them in its model_config, so a
 * model is never built with constants other than the ones it was trained with: code that does not know a key
 * refuses the config, and a config without them is an old checkpoint that the migrations complete.
 */
export interface GPTArchitecture {
  /** Rotary embedding base (theta). */
  rotary_base: number;
  /** The rotary tables' precision: nanochat kept them in bfloat16 until 2026-03-04. */
  rotary_dtype: RotaryDtype;
  /** q and k are each multiplied by this after the QK norm. */
  qk_scale: number;
  short_window: ShortWindowRule;
  /** logits = softcap * tanh(logits / softcap). */
  logit_softcap: number;
  /** RMSNorm epsilon (torch's F.rms_norm default for float32: its machine epsilon). */
  norm_eps: number;
  /** wte, lm_head and value embeddings have vocab_size rounded up to this many rows; logits are cut back. */
  vocab_multiple: number;
  /** Value embeddings (ResFormer) with a per-head gate on the layers hasValueEmbedding() picks. */
  value_embeds: boolean;
  /** The gate reads this many leading channels of the attention input... */
  ve_gate_channels: number;
  /** ...and is ve_gate_scale * sigmoid(...). Both apply only with value_embeds. */
  ve_gate_scale: number;
  /** Mix the previous token's embedding into each position through a gate (smear_gate, smear_lambda). */
  smear: boolean;
  /** Subtract backout_lambda times the residual after layer floor(n_layer/2) before the final norm. */
  backout: boolean;
}

export type GPTConfig = GPTShape & GPTArchitecture;

/** Leading channels of the embedding that the smear gate reads (smear_gate.weight is [1, 24]). */
export const SMEAR_GATE_CHANNELS = 24;

/**
 * How many leading channels the smear gate and the value-embedding gates read. nanochat's models are all
 * wider than the gates; a narrower one (only here) reads all of its channels.
 */
export function gateWidths(config: GPTConfig): { smear: number; valueEmbedding: number } {
  return {
    smear: Math.min(SMEAR_GATE_CHANNELS, config.n_embd),
    valueEmbedding: Math.min(config.ve_gate_channels, config.n_embd),
  };
}

/**
 * nanochat's architecture at commit 92d63d4 (2026-07-03), unchanged since a825e63 (2026-03-14): the default
 * for new models.
 */
export const NANOCHAT_ARCHITECTURE: Readonly<GPTArchitecture> = Object.freeze({
  rotary_base: 100000,
  rotary_dtype: 'float32',
  qk_scale: 1.2,
  short_window: 'quarter-ceil128',
  logit_softcap: 15,
  norm_eps: 1.1920928955078125e-7,
  vocab_multiple: 64,
  value_embeds: true,
  ve_gate_channels: 12,
  ve_gate_scale: 3,
  smear: true,
  backout: true,
});

/**
 * The architecture of every checkpoint written before the constants were recorded (nanochat as of
 * 2026-01-11..16, without vocabulary padding). The migrations give it to configs that lack the keys.
 */
export const LEGACY_ARCHITECTURE: Readonly<GPTArchitecture> = Object.freeze({
  rotary_base: 10000,
  rotary_dtype: 'float32',
  qk_scale: 1,
  short_window: 'half',
  logit_softcap: 15,
  norm_eps: 1.1920928955078125e-7,
  vocab_multiple: 1,
  value_embeds: false,
  ve_gate_channels: 32,
  ve_gate_scale: 2,
  smear: false,
  backout: false,
});

/** Head size the n_head default aims for: small, because the default models are small. */
export const DEFAULT_HEAD_DIM = 16;

/**
 * Named architectures: what nanochat's GPT computed in each span of its history (first commit of the span,
 * and its date), and this project's own before the constants were recorded. `ckpt import --architecture`
 * takes these names; docs/import.md lists the commits each covers.
 */
export const ARCHITECTURES: Readonly<Record<string, Readonly<GPTArchitecture>>> = Object.freeze({
  /** a825e63 (2026-03-14) .. 92d63d4 (2026-07-03): smear, backout, q/k scale 1.2, quarter windows. */
  'nanochat-2026-03-14': NANOCHAT_ARCHITECTURE,
  /** 6ed7d1d (2026-03-09): rotary base 100000, q/k scale 1.15, third windows, gates on 12 channels, range 3. */
  'nanochat-2026-03-09': Object.freeze({
    ...NANOCHAT_ARCHITECTURE,
    qk_scale: 1.15,
    short_window: 'third-ceil128',
    smear: false,
    backout: false,
  }),
  /** 1076f97 (2026-03-04): rotary tables in the compute dtype (float32 here), no longer bfloat16. */
  'nanochat-2026-03-04': Object.freeze({
    ...LEGACY_ARCHITECTURE,
    vocab_multiple: 64,
    value_embeds: true,
    logit_softcap: 20,
  }),
  /** aba30cb (2026-03-02): the 2026-01-16 model with logit softcap 20. */
  'nanochat-2026-03-02': Object.freeze({
    ...LEGACY_ARCHITECTURE,
    rotary_dtype: 'bfloat16',
    vocab_multiple: 64,
    value_embeds: true,
    logit_softcap: 20,
  }),
  /**
   * e85db6b (2026-01-16): value embeddings on alternating layers, gates on 32 channels, range 2; rotary
   * tables in bfloat16.
   */
  'nanochat-2026-01-16': Object.freeze({
    ...LEGACY_ARCHITECTURE,
    rotary_dtype: 'bfloat16',
    vocab_multiple: 64,
    value_embeds: true,
  }),
  /** This project's checkpoints written before the constants were recorded. */
  legacy: LEGACY_ARCHITECTURE,
});

/**
 * Default demo model ("d2"): 2 layers, 64 wide, 4 heads of 16, 64 tokens of context, byte vocabulary plus BOS
 * (padded to 320 rows), nanochat's architecture. About 0.16M parameters; one step on a batch of 8 takes tens
 * of milliseconds on the wasm backend.
 */
export const DEFAULT_CONFIG: Readonly<GPTConfig> = Object.freeze({
  sequence_len: 64,
  vocab_size: 257,
  n_layer: 2,
  n_head: 4,
  n_kv_head: 4,
  n_embd: 64,
  window_pattern: 'L',
  ...NANOCHAT_ARCHITECTURE,
});

const INT_KEYS = [
  'sequence_len',
  'vocab_size',
  'n_layer',
  'n_head',
  'n_kv_head',
  'n_embd',
  'vocab_multiple',
  've_gate_channels',
] as const;
const POSITIVE_KEYS = ['rotary_base', 'qk_scale', 'logit_softcap', 'norm_eps', 've_gate_scale'] as const;
const BOOLEAN_KEYS = ['value_embeds', 'smear', 'backout'] as const;
const KEYS: readonly string[] = [
  ...INT_KEYS,
  ...POSITIVE_KEYS,
  ...BOOLEAN_KEYS,
  'window_pattern',
  'short_window',
  'rotary_dtype',
];

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
  for (const key of POSITIVE_KEYS) {
    const v = given[key];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      throw new ConfigError(`model config ${key} must be a positive number, got ${JSON.stringify(v)}`, {
        field: key,
      });
    }
  }
  for (const key of BOOLEAN_KEYS) {
    const v = given[key];
    if (v !== undefined && typeof v !== 'boolean') {
      throw new ConfigError(`model config ${key} must be true or false, got ${JSON.stringify(v)}`, {
        field: key,
      });
    }
  }
  const rd = given.rotary_dtype;
  if (rd !== undefined && !ROTARY_DTYPES.includes(rd as RotaryDtype)) {
    throw new ConfigError(
      `model config rotary_dtype must be one of ${ROTARY_DTYPES.join(', ')}, got ${JSON.stringify(rd)}`,
      { field: 'rotary_dtype' },
    );
  }
  const sw = given.short_window;
  if (sw !== undefined && !(typeof sw === 'string' && Object.hasOwn(SHORT_WINDOW_RULES, sw))) {
    throw new ConfigError(
      `model config short_window must be one of ${Object.keys(SHORT_WINDOW_RULES).join(', ')}, got ${JSON.stringify(sw)}`,
      { field: 'short_window' },
    );
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
    ...NANOCHAT_ARCHITECTURE,
    ...(Object.fromEntries(
      Object.keys(NANOCHAT_ARCHITECTURE)
        .filter((k) => given[k] !== undefined)
        .map((k) => [k, given[k]]),
    ) as Partial<GPTArchitecture>),
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

/** vocab_size rounded up to vocab_multiple: the rows of wte, lm_head and the value embeddings. */
export function paddedVocab(config: Pick<GPTConfig, 'vocab_size' | 'vocab_multiple'>): number {
  return Math.ceil(config.vocab_size / config.vocab_multiple) * config.vocab_multiple;
}

/** nanochat's has_ve: value embeddings on alternating layers, the last layer always included. */
export function hasValueEmbedding(config: GPTConfig, layer: number): boolean {
  return config.value_embeds && layer % 2 === (config.n_layer - 1) % 2;
}

/** The layer whose output backout subtracts (nanochat caches it at the halfway point). */
export function backoutLayer(config: Pick<GPTConfig, 'n_layer'>): number {
  return Math.floor(config.n_layer / 2);
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
  const short = SHORT_WINDOW_RULES[config.short_window](config.sequence_len);
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
  const { n_embd: C, n_layer: L, n_kv_head } = config;
  const V = paddedVocab(config);
  const kv = n_kv_head * headDim(config);
  const gates = gateWidths(config);
  const shapes: Record<string, number[]> = { 'transformer.wte.weight': [V, C] };
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    shapes[`${p}.attn.c_q.weight`] = [C, C];
    shapes[`${p}.attn.c_k.weight`] = [kv, C];
    shapes[`${p}.attn.c_v.weight`] = [kv, C];
    shapes[`${p}.attn.c_proj.weight`] = [C, C];
    if (hasValueEmbedding(config, i)) shapes[`${p}.attn.ve_gate.weight`] = [n_kv_head, gates.valueEmbedding];
    shapes[`${p}.mlp.c_fc.weight`] = [4 * C, C];
    shapes[`${p}.mlp.c_proj.weight`] = [C, 4 * C];
  }
  shapes['lm_head.weight'] = [V, C];
  shapes['resid_lambdas'] = [L];
  shapes['x0_lambdas'] = [L];
  if (config.smear) {
    shapes['smear_gate.weight'] = [1, gates.smear];
    shapes['smear_lambda'] = [1];
  }
  if (config.backout) shapes['backout_lambda'] = [1];
  for (let i = 0; i < L; i++) if (hasValueEmbedding(config, i)) shapes[`value_embeds.${i}.weight`] = [V, kv];
  return shapes;
}

/**
 * The built-in GPT's checkpoint migrations: config keys and tensors that later versions added, patched in
 * with the values that make an old checkpoint compute exactly what it computed (see checkpoint/migrations.ts
 * for the registry). They claim checkpoints whose meta names no program: those were all written by the GPT.
 */
import { registerMigration, SchemaError, type Meta } from '../checkpoint';
import { LEGACY_ARCHITECTURE } from './config';

function withConfig(meta: Meta, patch: Record<string, unknown>): Meta {
  return { ...meta, model_config: { ...(meta.model_config ?? {}), ...patch } };
}

function nLayer(meta: Meta): number {
  const n = meta.model_config?.n_layer;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) {
    throw new SchemaError(
      `meta of step ${meta.step}: model_config.n_layer must be a positive integer to patch tensors`,
      {
        field: 'model_config.n_layer',
        step: meta.step,
      },
    );
  }
  return n;
}

function filled(n: number, value: number): Float32Array {
  return new Float32Array(n).fill(value);
}

// Checkpoints written before sliding-window attention existed used full attention in every layer.
registerMigration({
  program: 'gpt',
  claimsUnnamed: true,
  id: 'window-pattern-default',
  description: 'model_config.window_pattern was missing; set to "L" (full attention in every layer)',
  patchMeta: (meta) =>
    meta.model_config && meta.model_config.window_pattern === undefined
      ? withConfig(meta, { window_pattern: 'L' })
      : null,
});

// Before grouped-query attention, every head had its own keys and values.
registerMigration({
  program: 'gpt',
  claimsUnnamed: true,
  id: 'n-kv-head-default',
  description: 'model_config.n_kv_head was missing; set to n_head (no grouped-query attention)',
  patchMeta: (meta) =>
    meta.model_config &&
    meta.model_config.n_kv_head === undefined &&
    typeof meta.model_config.n_head === 'number'
      ? withConfig(meta, { n_kv_head: meta.model_config.n_head })
      : null,
});

/** The architecture keys `config` lacks, with their legacy values; null when it lacks none (or is no GPT config). */
function missingArchitecture(config: unknown): Record<string, unknown> | null {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return null;
  const given = config as Record<string, unknown>;
  if (given.n_layer === undefined) return null;
  const missing = Object.entries(LEGACY_ARCHITECTURE).filter(([key]) => given[key] === undefined);
  return missing.length > 0 ? Object.fromEntries(missing) : null;
}

// Checkpoints written before the architecture's constants were recorded computed with the legacy ones
// (rotary base 10000, no q/k scaling, half-length short windows, no padding, value embeddings, smear or
// backout). Both the model config and the program config (which a resumed run is configured from) get them.
registerMigration({
  program: 'gpt',
  claimsUnnamed: true,
  id: 'architecture-constants',
  description:
    'model_config lacked the architecture constants (rotary_base, qk_scale, ...); set to the legacy architecture',
  patchMeta: (meta) => {
    const model = missingArchitecture(meta.model_config);
    const program = missingArchitecture(meta.config);
    if (!model && !program) return null;
    return {
      ...meta,
      ...(model ? { model_config: { ...meta.model_config, ...model } } : {}),
      ...(program ? { config: { ...(meta.config as Record<string, unknown>), ...program } } : {}),
    };
  },
});

// The per-layer residual and input-skip scalars came later; their neutral values make the model behave
// exactly as it did before they existed (residual scaled by 1, no skip from the input embedding).
registerMigration({
  program: 'gpt',
  claimsUnnamed: true,
  id: 'per-layer-scalars',
  description: 'resid_lambdas / x0_lambdas were missing; added with neutral values 1.0 / 0.0',
  patchTensors: (tensors, meta) => {
    if (!meta.model_config || (tensors.resid_lambdas && tensors.x0_lambdas)) return false;
    if (!Object.keys(tensors).some((k) => k.startsWith('transformer.'))) return false;
    const n = nLayer(meta);
    if (!tensors.resid_lambdas) tensors.resid_lambdas = { dtype: 'F32', shape: [n], data: filled(n, 1) };
    if (!tensors.x0_lambdas) tensors.x0_lambdas = { dtype: 'F32', shape: [n], data: filled(n, 0) };
    return true;
  },
});

// Checkpoints from before programs were recorded: the GPT wrote them; its config and the loop's settings
// were kept under `model_config` and `run`.
registerMigration({
  program: 'gpt',
  claimsUnnamed: true,
  id: 'program-record',
  description:
    'meta named no program; recorded as the built-in GPT (version 1) with its config and loop settings',
  patchMeta: (meta) => {
    // Only the trainer's own checkpoints have `run`; imported weights get their settings from the flags.
    if (meta.program !== undefined || meta.run === undefined) return null;
    const run = meta.run as
      { seed?: number; batch?: number; schedule?: unknown; data?: { path?: string } } | undefined;
    const config = { ...(meta.model_config ?? {}), ...(run?.data?.path ? { data: run.data.path } : {}) };
    return {
      ...meta,
      program: { name: 'gpt', version: 1 },
      config,
      ...(run && typeof run.seed === 'number' && typeof run.batch === 'number'
        ? { loop: { seed: run.seed, batch: run.batch, ...(run.schedule ? { schedule: run.schedule } : {}) } }
        : {}),
    };
  },
});

/**
 * Checkpoints outlive the code that wrote them. A migration patches an old checkpoint's config or tensors
 * on load so today's model can build from it (nanochat's `_patch_missing_config_keys` and
 * `_patch_missing_keys`, made into a registry). Each one is logged once per process through log0.
 * Migrations only add what is missing with its neutral value, so applying them twice changes nothing.
 */
import { SchemaError } from './errors';
import { logOnce } from './log';
import type { Meta } from './manifest';
import type { NamedTensors } from './tensors';

export interface Migration {
  id: string;
  /** What it does, for the log. */
  description: string;
  /** Patch the meta (its model_config); return null when there is nothing to do. */
  patchMeta?(meta: Meta): Meta | null;
  /** Patch the model tensors in place; return true when something changed. */
  patchTensors?(tensors: NamedTensors, meta: Meta): boolean;
}

const registry: Migration[] = [];

export function registerMigration(migration: Migration): void {
  if (registry.some((m) => m.id === migration.id))
    throw new Error(`migration ${migration.id} is already registered`);
  registry.push(migration);
}

export function registeredMigrations(): readonly Migration[] {
  return registry;
}

/** Apply every registered migration in order; returns the patched meta and the ids applied. */
export function applyMigrations(meta: Meta, tensors: NamedTensors | null): { meta: Meta; applied: string[] } {
  const applied: string[] = [];
  let current = meta;
  for (const m of registry) {
    let changed = false;
    const patched = m.patchMeta?.(current);
    if (patched) {
      current = patched;
      changed = true;
    }
    if (tensors && m.patchTensors?.(tensors, current)) changed = true;
    if (changed) {
      applied.push(m.id);
      logOnce(`migration:${m.id}`, `checkpoint migration ${m.id}: ${m.description}`, { migration: m.id });
    }
  }
  return { meta: current, applied };
}

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
  id: 'window-pattern-default',
  description: 'model_config.window_pattern was missing; set to "L" (full attention in every layer)',
  patchMeta: (meta) =>
    meta.model_config && meta.model_config.window_pattern === undefined
      ? withConfig(meta, { window_pattern: 'L' })
      : null,
});

// Before grouped-query attention, every head had its own keys and values.
registerMigration({
  id: 'n-kv-head-default',
  description: 'model_config.n_kv_head was missing; set to n_head (no grouped-query attention)',
  patchMeta: (meta) =>
    meta.model_config &&
    meta.model_config.n_kv_head === undefined &&
    typeof meta.model_config.n_head === 'number'
      ? withConfig(meta, { n_kv_head: meta.model_config.n_head })
      : null,
});

// torch.compile and DistributedDataParallel wrap modules and prefix every key; the weights are the same.
registerMigration({
  id: 'strip-wrapper-prefixes',
  description: 'tensor names carried "_orig_mod." or "module." prefixes; stripped',
  patchTensors: (tensors) => {
    let changed = false;
    for (const name of Object.keys(tensors)) {
      let bare = name;
      while (bare.startsWith('_orig_mod.') || bare.startsWith('module.')) {
        bare = bare.startsWith('_orig_mod.') ? bare.slice('_orig_mod.'.length) : bare.slice('module.'.length);
      }
      if (bare === name) continue;
      if (Object.hasOwn(tensors, bare)) {
        throw new SchemaError(
          `tensor "${name}" and "${bare}" are both present: the prefix cannot be stripped`,
          {
            tensor: name,
          },
        );
      }
      tensors[bare] = tensors[name]!;
      delete tensors[name];
      changed = true;
    }
    return changed;
  },
});

// The per-layer residual and input-skip scalars came later; their neutral values make the model behave
// exactly as it did before they existed (residual scaled by 1, no skip from the input embedding).
registerMigration({
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

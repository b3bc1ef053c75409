/**
 * Checkpoints outlive the code that wrote them. A migration patches an old checkpoint's config or tensors
 * on load so today's model can build from it (nanochat's `_patch_missing_config_keys` and
 * `_patch_missing_keys`, made into a registry). Each one is logged once per process through log0.
 * Migrations only add what is missing with its neutral value, so applying them twice changes nothing.
 * The registry knows no model: a training program registers its own migrations, and they apply only to
 * checkpoints whose meta names that program (meta.program.name).
 */
import { SchemaError } from './errors';
import { logOnce } from './log';
import type { Meta } from './manifest';
import type { NamedTensors } from './tensors';

export interface Migration {
  id: string;
  /** The program whose checkpoints it patches (meta.program.name); unset: every checkpoint. */
  program?: string;
  /**
   * Also patch checkpoints whose meta names no program (written before programs were recorded): the
   * program that wrote all of those claims them.
   */
  claimsUnnamed?: boolean;
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

/**
 * Register a program's migrations (each tagged with the program), once: those already registered for that
 * program under the same id are skipped. Ids are per program, so two programs may use the same one.
 */
export function registerMigrations(migrations: readonly Migration[]): void {
  for (const m of migrations) {
    if (!registry.some((r) => r.id === m.id && r.program === m.program)) registry.push(m);
  }
}

function appliesTo(m: Migration, meta: Meta): boolean {
  if (m.program === undefined) return true;
  const named = (meta.program as { name?: unknown } | undefined)?.name;
  return typeof named === 'string' ? named === m.program : m.claimsUnnamed === true;
}

/** Apply every registered migration in order; returns the patched meta and the ids applied. */
export function applyMigrations(meta: Meta, tensors: NamedTensors | null): { meta: Meta; applied: string[] } {
  const applied: string[] = [];
  let current = meta;
  for (const m of registry) {
    if (!appliesTo(m, current)) continue;
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

/**
 * The one place that turns the environment into typed settings. Defaults work on a laptop with no setup.
 * Only cli/, workers/ and activities/ import this file; the checkpoint, model and train layers take their
 * settings as arguments, and workflows receive theirs in their input (their sandbox has no environment).
 *
 * Environment overrides:
 *   CKPT_ROOT            store root for checkpoints (a directory, or s3://bucket/prefix)   default ./checkpoints
 *   CKPT_SOURCES         extra or replaced sources: "name=dir,name2=dir2"                  default base, sft, rl
 *   CKPT_BACKEND         force a compute backend: tensorflow-gpu | tensorflow | wasm | cpu
 *   CKPT_LOG_LEVEL       pino level (debug, info, warn, error)                              default info
 *   CKPT_LOG_ALL_RANKS   1 = every rank logs, tagged with its rank (default: rank 0 only)
 *   CKPT_LOG_FORMAT      text (short lines, the CLI's default) or json (pino lines)
 *   CKPT_GC_GRACE        grace period before orphan files are collected, e.g. 30m, 1h, 2d   default 1h
 */
import { InvalidArgumentError, validateName, type RetentionPolicy } from './checkpoint';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export interface CkptConfig {
  storeRoot: string;
  /** Source name → directory under the store root (nanochat's base/sft/rl map, but configurable). */
  sources: Record<string, string>;
  backend?: BackendName;
  logLevel: string;
  logAllRanks: boolean;
  /** 'text' for people (the CLI's default), 'json' for log pipelines (workers' default). */
  logFormat: 'text' | 'json';
  gcGraceMs: number;
  /** Used by pipelines and `ckpt prune` when no policy flag is given. */
  retention: RetentionPolicy;
}

export const DEFAULT_SOURCES: Readonly<Record<string, string>> = {
  base: 'base_checkpoints',
  sft: 'chatsft_checkpoints',
  rl: 'chatrl_checkpoints',
};

export function parseSources(spec: string, base: Record<string, string> = { ...DEFAULT_SOURCES }): Record<string, string> {
  const out = { ...base };
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) {
      throw new InvalidArgumentError(`CKPT_SOURCES: "${part}" must look like name=directory`, { field: 'CKPT_SOURCES' });
    }
    out[validateName(part.slice(0, eq), 'source')] = validateName(part.slice(eq + 1), 'source directory');
  }
  return out;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "30m", "1h", "2d", "500ms" or a bare number of seconds. */
export function parseDuration(text: string, field: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    throw new InvalidArgumentError(`${field}: "${text}" is not a duration (e.g. 90s, 30m, 1h, 2d)`, { field });
  }
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

const BACKENDS: BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export function loadConfig(env: NodeJS.ProcessEnv = process.env): CkptConfig {
  const backend = env.CKPT_BACKEND?.trim();
  if (backend && !BACKENDS.includes(backend as BackendName)) {
    throw new InvalidArgumentError(`CKPT_BACKEND must be one of ${BACKENDS.join(', ')}, got "${backend}"`, {
      field: 'CKPT_BACKEND',
    });
  }
  return {
    storeRoot: env.CKPT_ROOT?.trim() || './checkpoints',
    sources: env.CKPT_SOURCES ? parseSources(env.CKPT_SOURCES) : { ...DEFAULT_SOURCES },
    backend: (backend as BackendName) || undefined,
    logLevel: env.CKPT_LOG_LEVEL?.trim() || 'info',
    logAllRanks: env.CKPT_LOG_ALL_RANKS === '1' || env.CKPT_LOG_ALL_RANKS === 'true',
    logFormat: env.CKPT_LOG_FORMAT === 'json' ? 'json' : 'text',
    gcGraceMs: env.CKPT_GC_GRACE ? parseDuration(env.CKPT_GC_GRACE, 'CKPT_GC_GRACE') : 3_600_000,
    retention: { keepLast: 3 },
  };
}

/** Directory of a source under a root, e.g. ("./ckpt", "base") → "./ckpt/base_checkpoints". */
export function sourceDir(config: Pick<CkptConfig, 'sources'>, source: string): string {
  validateName(source, 'source');
  const dir = config.sources[source];
  if (!dir) {
    throw new InvalidArgumentError(
      `unknown source "${source}"; known sources: ${Object.keys(config.sources).join(', ')} (add one with CKPT_SOURCES=name=dir)`,
      { field: 'source' },
    );
  }
  return dir;
}

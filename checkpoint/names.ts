/**
 * File names of the on-disk contract and validation of everything a user can name (tags, sources, steps).
 * Names are checked before any path is built from them, so traversal never reaches the filesystem.
 */
import { InvalidArgumentError } from './errors';

export const STEP_DIGITS = 6;

export function padStep(step: number): string {
  return String(step).padStart(STEP_DIGITS, '0');
}

export function modelFile(step: number): string {
  return `model_${padStep(step)}.safetensors`;
}
export function optimFile(step: number, rank: number): string {
  return `optim_${padStep(step)}_rank${rank}.safetensors`;
}
export function metaFile(step: number): string {
  return `meta_${padStep(step)}.json`;
}
export function manifestFile(step: number): string {
  return `manifest_${padStep(step)}.json`;
}
export function evalFile(step: number): string {
  return `eval_${padStep(step)}.json`;
}

/** The name part of an extra per-step file: one safe path segment that does not start with a dot. */
export const EXTRA_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** An extra file a command program publishes with a step (`ckpt commit`): hashed into the manifest. */
export function extraFile(step: number, name: string): string {
  return `extra_${padStep(step)}_${name}`;
}

/**
 * Append-only record of what retention deleted (one JSON line per pruned step), so reports can still say
 * which steps existed and which policy removed them. Belongs to the directory, not to any step.
 */
export const RETENTION_LOG = 'retention_log.jsonl';

/** Temp files carry this prefix until they are published under their final name. */
export const TEMP_PREFIX = '.tmp-';

export type FileKind =
  | 'model'
  | 'optim'
  | 'meta'
  | 'extra'
  | 'manifest'
  | 'eval'
  | 'lease'
  | 'rank-done'
  | 'temp'
  | 'retention-log';

export interface ParsedName {
  kind: FileKind;
  step?: number;
  rank?: number;
}

const STEP = '(\\d{6,})';
const PATTERNS: Array<[FileKind, RegExp]> = [
  ['model', new RegExp(`^model_${STEP}\\.safetensors$`)],
  ['optim', new RegExp(`^optim_${STEP}_rank(\\d+)\\.safetensors$`)],
  ['meta', new RegExp(`^meta_${STEP}\\.json$`)],
  ['extra', new RegExp(`^extra_${STEP}_[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)],
  ['manifest', new RegExp(`^manifest_${STEP}\\.json$`)],
  ['eval', new RegExp(`^eval_${STEP}\\.json$`)],
  ['lease', new RegExp(`^lease_${STEP}_[A-Za-z0-9_-]+\\.json$`)],
  ['rank-done', new RegExp(`^\\.rank-done_${STEP}_rank(\\d+)\\.json$`)],
];

/** What a file in a checkpoint directory is, or null when it is not one of ours. */
export function parseFileName(name: string): ParsedName | null {
  if (name.startsWith(TEMP_PREFIX)) return { kind: 'temp' };
  if (name === RETENTION_LOG) return { kind: 'retention-log' };
  for (const [kind, re] of PATTERNS) {
    const m = re.exec(name);
    if (!m) continue;
    const parsed: ParsedName = { kind, step: Number(m[1]) };
    if (m[2] !== undefined) parsed.rank = Number(m[2]);
    return parsed;
  }
  return null;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A tag (`d12`), source name (`base`) or source directory: one path segment, no traversal. */
export function validateName(value: string, field: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`${field} must be a non-empty name`, { field });
  }
  if (value === '.' || value === '..' || value.includes('..')) {
    throw new InvalidArgumentError(
      `${field} "${value}" must not be "." or contain "..": names cannot leave their directory`,
      {
        field,
      },
    );
  }
  if (value.includes('/') || value.includes('\\') || value.includes('\0')) {
    throw new InvalidArgumentError(`${field} "${value}" must be a single name without path separators`, {
      field,
    });
  }
  if (!NAME_RE.test(value)) {
    throw new InvalidArgumentError(
      `${field} "${value}" may only use letters, digits, '.', '_' and '-' and must start with a letter or digit`,
      { field },
    );
  }
  return value;
}

/** A step: a non-negative safe integer. Accepts numbers and decimal strings ("30", "000030"). */
export function validateStep(value: unknown, field = 'step'): number {
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\d+$/.test(value.trim())) n = Number(value.trim());
  else
    throw new InvalidArgumentError(`${field} must be a non-negative integer, got ${JSON.stringify(value)}`, {
      field,
    });
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError(`${field} must be a non-negative integer, got ${JSON.stringify(value)}`, {
      field,
    });
  }
  return n;
}

export function validateRank(rank: number, worldSize: number): void {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) {
    throw new InvalidArgumentError(`worldSize must be a positive integer, got ${worldSize}`, {
      field: 'worldSize',
    });
  }
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new InvalidArgumentError(`rank must be an integer in [0, ${worldSize}), got ${rank}`, {
      field: 'rank',
    });
  }
}

/**
 * The manifest is the commit marker: a checkpoint exists only when `manifest_<step>.json` does. It lists
 * every file of the step with its size and checksum (checksum.ts: crc32 since format version 2, sha256
 * before), so a reader can prove the bytes it loads are the bytes that were saved. Meta JSON is
 * schema-checked here too.
 */
import { CHECKSUM_FORMS, checksumKinds, type FileRecord } from './checksum';
import { SchemaError } from './errors';
import { manifestFile, metaFile, parseFileName } from './names';

export const FORMAT = 'temporal-ckpt';
/** 2: file records carry crc32 (version 1 records carry sha256; both are read). */
export const FORMAT_VERSION = 2;

export type { FileRecord };

export interface Manifest {
  format: typeof FORMAT;
  format_version: number;
  step: number;
  world_size: number;
  files: Record<string, FileRecord>;
  committed_at?: string;
  /** The writer lease the commit was made under (checkpoint/writer.ts), for audits; absent without one. */
  writer_epoch?: number;
}

export type Meta = Record<string, unknown> & {
  step: number;
  world_size: number;
  format_version: number;
  model_config?: Record<string, unknown>;
};

function parseJsonObject(buf: Buffer | string, file: string, step?: number): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(typeof buf === 'string' ? buf : buf.toString('utf8'));
  } catch (err) {
    throw new SchemaError(`${file}: not valid JSON (${(err as Error).message})`, { file, step, cause: err });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new SchemaError(`${file}: expected a JSON object`, { file, step });
  }
  return value as Record<string, unknown>;
}

function requireInt(
  obj: Record<string, unknown>,
  field: string,
  file: string,
  min: number,
  step?: number,
): number {
  const v = obj[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new SchemaError(
      `${file}: field "${field}" must be an integer >= ${min}, got ${JSON.stringify(v)}`,
      {
        file,
        field,
        step,
      },
    );
  }
  return v;
}

export function parseManifest(buf: Buffer | string, step: number): Manifest {
  const file = manifestFile(step);
  const obj = parseJsonObject(buf, file, step);
  if (obj.format !== FORMAT) {
    throw new SchemaError(`${file}: field "format" must be "${FORMAT}", got ${JSON.stringify(obj.format)}`, {
      file,
      field: 'format',
      step,
    });
  }
  const version = requireInt(obj, 'format_version', file, 1, step);
  if (version > FORMAT_VERSION) {
    throw new SchemaError(
      `${file}: format_version ${version} is newer than this tool supports (${FORMAT_VERSION}); upgrade the tool`,
      { file, field: 'format_version', step },
    );
  }
  const savedStep = requireInt(obj, 'step', file, 0, step);
  if (savedStep !== step) {
    throw new SchemaError(`${file}: field "step" is ${savedStep}, but the file name says ${step}`, {
      file,
      field: 'step',
      step,
    });
  }
  const worldSize = requireInt(obj, 'world_size', file, 1, step);
  const files = obj.files;
  if (files === null || typeof files !== 'object' || Array.isArray(files)) {
    throw new SchemaError(`${file}: field "files" must be an object`, { file, field: 'files', step });
  }
  const out: Record<string, FileRecord> = {};
  for (const [name, rec] of Object.entries(files as Record<string, unknown>)) {
    const parsed = parseFileName(name);
    if (!parsed || parsed.step !== step || !['model', 'optim', 'meta', 'extra'].includes(parsed.kind)) {
      throw new SchemaError(`${file}: files["${name}"] is not a file of step ${step}`, {
        file,
        field: `files.${name}`,
        step,
      });
    }
    if (parsed.kind === 'optim' && (parsed.rank ?? 0) >= worldSize) {
      throw new SchemaError(`${file}: files["${name}"] names a rank outside world size ${worldSize}`, {
        file,
        field: `files.${name}`,
        step,
      });
    }
    const r = rec as Record<string, unknown>;
    const record = checkedRecord(r, `${file}: files["${name}"]`, `files.${name}`, step);
    requireInt(r, 'bytes', `${file} files["${name}"]`, 0, step);
    out[name] = { bytes: r.bytes as number, ...record };
  }
  if (!out[metaFile(step)]) {
    throw new SchemaError(`${file}: lists no ${metaFile(step)}`, { file, field: 'files', step });
  }
  return {
    format: FORMAT,
    format_version: version,
    step,
    world_size: worldSize,
    files: out,
    committed_at: typeof obj.committed_at === 'string' ? obj.committed_at : undefined,
    ...(Number.isSafeInteger(obj.writer_epoch) ? { writer_epoch: obj.writer_epoch as number } : {}),
  };
}

/** The record's checksums, each in its form; at least one. */
function checkedRecord(r: unknown, where: string, field: string, step: number): Omit<FileRecord, 'bytes'> {
  const rec = (r !== null && typeof r === 'object' ? r : {}) as Record<string, unknown>;
  const out: Omit<FileRecord, 'bytes'> = {};
  for (const kind of ['crc32', 'sha256'] as const) {
    const value = rec[kind];
    if (value === undefined) continue;
    if (typeof value !== 'string' || !CHECKSUM_FORMS[kind].test(value)) {
      const digits = kind === 'crc32' ? 8 : 64;
      throw new SchemaError(`${where}.${kind} must be ${digits} lowercase hex digits`, {
        file: manifestFile(step),
        field: `${field}.${kind}`,
        step,
      });
    }
    out[kind] = value;
  }
  if (checksumKinds({ bytes: 0, ...out }).length === 0) {
    throw new SchemaError(`${where} has no checksum (crc32 or sha256)`, {
      file: manifestFile(step),
      field: `${field}.crc32`,
      step,
    });
  }
  return out;
}

export function parseMeta(buf: Buffer | string, step: number): Meta {
  const file = metaFile(step);
  const obj = parseJsonObject(buf, file, step);
  const savedStep = requireInt(obj, 'step', file, 0, step);
  if (savedStep !== step) {
    throw new SchemaError(`${file}: field "step" is ${savedStep}, but the file name says ${step}`, {
      file,
      field: 'step',
      step,
    });
  }
  requireInt(obj, 'world_size', file, 1, step);
  requireInt(obj, 'format_version', file, 1, step);
  const config = obj.model_config;
  if (config !== undefined && (config === null || typeof config !== 'object' || Array.isArray(config))) {
    throw new SchemaError(`${file}: field "model_config" must be an object`, {
      file,
      field: 'model_config',
      step,
    });
  }
  return obj as Meta;
}

/** Top-level finite numbers of an eval file: these are the metrics retention ranks by. */
export function parseEvalMetrics(buf: Buffer | string, step: number, file: string): Record<string, number> {
  const obj = parseJsonObject(buf, file, step);
  const metrics: Record<string, number> = {};
  for (const [k, v] of Object.entries(obj)) if (typeof v === 'number' && Number.isFinite(v)) metrics[k] = v;
  return metrics;
}

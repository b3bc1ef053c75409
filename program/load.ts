/**
 * Finding a program: by name (built in, or registered on this worker) or by module path (a `.js`, `.cjs`,
 * `.mjs` or `.ts` file whose default export is a program). A training child always gets a path or a
 * built-in name, never an object: programs cross process boundaries as module paths.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { metaFile, registerMigrations, type Meta } from '../checkpoint';
import { gptProgram } from '../model/program';
import { definedModule, type LoopSettings, type TrainingProgram } from './contract';
import { ProgramLoadError, ProgramNotRegisteredError } from './errors';
import { checkProgramMeta, configureProgram, recordedProgram } from './meta';

/** Programs that ship with the package, by name. */
export const BUILTIN_PROGRAMS: Readonly<Record<string, TrainingProgram<unknown>>> = Object.freeze({
  gpt: gptProgram as TrainingProgram<unknown>,
});

export const DEFAULT_PROGRAM = 'gpt';

/** Where each program object was loaded from or defined, so a worker can hand its path to a child. */
const modulePaths = new WeakMap<object, string>();

/** The module path a program can be loaded from in another process, if known. */
export function programModule(program: TrainingProgram<unknown>): string | undefined {
  return modulePaths.get(program) ?? definedModule(program);
}

/** Make a program's migrations apply to its checkpoints on every load (idempotent). */
export function registerProgramMigrations(program: TrainingProgram<unknown>): void {
  if (program.migrations)
    registerMigrations(program.migrations.map((m) => ({ ...m, program: program.name })));
}

/** A path rather than a name: has a directory part or a module extension. */
export function isProgramPath(spec: string): boolean {
  return /[\\/]/.test(spec) || /\.(m?js|cjs|ts|mts|cts)$/.test(spec);
}

/** A program's name (and a name a worker registers it under). */
export const PROGRAM_NAME = /^[a-z0-9][a-z0-9._-]*$/i;

/** The problems with a value that should be a program, or [] when it is one. */
export function programProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return ['it is not an object'];
  const p = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof p.name !== 'string' || !PROGRAM_NAME.test(p.name))
    problems.push('name must be a short identifier');
  if (!Number.isSafeInteger(p.version) || (p.version as number) < 1)
    problems.push('version must be an integer >= 1');
  const metric = p.metric as { name?: unknown; mode?: unknown } | undefined;
  if (!metric || typeof metric.name !== 'string' || (metric.mode !== 'min' && metric.mode !== 'max')) {
    problems.push("metric must be { name, mode: 'min' | 'max' }");
  }
  if (p.optimizer !== 'loop' && p.optimizer !== 'program')
    problems.push("optimizer must be 'loop' or 'program'");
  if (
    p.defaultBatch !== undefined &&
    (!Number.isSafeInteger(p.defaultBatch) || (p.defaultBatch as number) < 1)
  ) {
    problems.push('defaultBatch must be an integer >= 1');
  }
  for (const fn of ['configure', 'start', 'evaluate']) {
    if (typeof p[fn] !== 'function') problems.push(`${fn} must be a function`);
  }
  return problems;
}

async function importModule(path: string): Promise<unknown> {
  if (/\.(ts|mts|cts)$/.test(path)) require('tsx/cjs');
  if (/\.mjs$/.test(path)) return import(pathToFileURL(path).href);
  return require(path);
}

/** The program in a module file: its default export (CommonJS `module.exports` or ESM `export default`). */
export async function loadProgramModule(path: string): Promise<TrainingProgram<unknown>> {
  const file = isAbsolute(path) ? path : resolve(path);
  if (!existsSync(file)) {
    throw new ProgramLoadError(`program ${path}: no such file`, { file: path, field: 'program' });
  }
  let mod: unknown;
  try {
    mod = await importModule(file);
  } catch (err) {
    throw new ProgramLoadError(`program ${path} failed to load: ${(err as Error).message.split('\n')[0]}`, {
      file: path,
      field: 'program',
    });
  }
  const candidate = unwrapDefault(mod);
  const problems = programProblems(candidate);
  if (problems.length > 0) {
    throw new ProgramLoadError(
      `program ${path}: its default export is not a training program (${problems.join('; ')})`,
      { file: path, field: 'program' },
    );
  }
  const program = candidate as TrainingProgram<unknown>;
  modulePaths.set(program, file);
  return program;
}

function unwrapDefault(mod: unknown): unknown {
  let value = mod;
  // ESM default, CommonJS interop (`exports.default`) and a default that is itself a namespace.
  for (let i = 0; i < 2; i++) {
    if (value && typeof value === 'object' && 'default' in value && programProblems(value).length > 0) {
      value = (value as { default: unknown }).default;
    }
  }
  return value;
}

/** Programs this process knows by name beyond the built-in ones (a worker's `--program NAME=PATH`). */
export type ProgramRegistry = Record<string, TrainingProgram<unknown> | string>;

/** A program by name or path: a registered name first, then a built-in name, then a module path. */
export async function loadProgram(
  spec: string,
  registry: ProgramRegistry = {},
): Promise<TrainingProgram<unknown>> {
  const registered = registry[spec];
  if (registered !== undefined) {
    return typeof registered === 'string' ? loadProgramModule(registered) : registered;
  }
  const builtin = BUILTIN_PROGRAMS[spec];
  if (builtin) return builtin;
  if (isProgramPath(spec)) return loadProgramModule(spec);
  const known = [...new Set([...Object.keys(BUILTIN_PROGRAMS), ...Object.keys(registry)])].sort();
  throw new ProgramNotRegisteredError(
    `program "${spec}" is not known here (known: ${known.join(', ')}); give a module path or register it by name`,
    { field: 'program' },
  );
}

/**
 * The program, config and loop settings a committed checkpoint was trained with: `given` when the caller
 * has one (checked against the meta), else the built-in program its meta names.
 */
export function programForCheckpoint(
  meta: Meta,
  step: number,
  given?: TrainingProgram<unknown>,
): { program: TrainingProgram<unknown>; config: unknown; loop: LoopSettings } {
  const file = metaFile(step);
  const recorded = recordedProgram(meta);
  const program = given ?? BUILTIN_PROGRAMS[recorded.name];
  if (!program) {
    throw new ProgramNotRegisteredError(
      `${file} was written by program "${recorded.name}", which is not built in: pass --program PATH`,
      { file, field: 'program', step },
    );
  }
  checkProgramMeta(program, meta, file);
  registerProgramMigrations(program);
  const config = configureProgram(program, {
    ...((meta.config as Record<string, unknown> | undefined) ?? {}),
  });
  const loop = (meta.loop as LoopSettings | undefined) ?? { seed: 0, batch: program.defaultBatch ?? 8 };
  return { program, config, loop };
}

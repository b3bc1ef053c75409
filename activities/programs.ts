/**
 * The programs a training worker can run, by name: the built-in ones, those registered with
 * `ckpt worker --program NAME=PATH` or the plugin's `programs` option. Training and evaluation run in child
 * processes, so a program crosses to the child as a module path (or a built-in name), never as an object.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { TrainingProgram } from '../program/contract';
import { ProgramLoadError } from '../program/errors';
import { BUILTIN_PROGRAMS, isProgramPath, programModule } from '../program/load';
import { activityWorkerIdentity, checkProgramPath } from './allowed-roots';

const registered = new Map<string, string>();

/** Register programs by name: a module path, or a program object whose module is known. */
export function registerPrograms(programs: Record<string, string | TrainingProgram<unknown>>): void {
  for (const [name, program] of Object.entries(programs)) {
    const path = typeof program === 'string' ? resolve(program) : programModule(program);
    if (!path) {
      throw new ProgramLoadError(
        `program "${name}": its module path is unknown; register it as a path (programs: { ${name}: '/path/to/program.js' }) ` +
          'or create it with defineProgram() in its own module',
        { field: 'programs' },
      );
    }
    if (!existsSync(path)) {
      throw new ProgramLoadError(`program "${name}": ${path} does not exist`, { field: 'programs' });
    }
    registered.set(name, path);
  }
}

/** Names this worker can run (built in and registered). */
export function workerProgramNames(): string[] {
  return [...new Set([...Object.keys(BUILTIN_PROGRAMS), ...registered.keys()])].sort();
}

/**
 * What to pass a child for a pipeline's program: a registered name's path, a built-in name, or the absolute
 * path the client resolved, when it lies under the worker's allowed program roots. A program this worker
 * lacks or does not allow fails the activity for good, naming both.
 */
export function programForChild(spec: string): string {
  const path = registered.get(spec);
  if (path) return path;
  if (BUILTIN_PROGRAMS[spec]) return spec;
  const worker = activityWorkerIdentity();
  if (isProgramPath(spec)) {
    checkProgramPath(spec);
    if (isAbsolute(spec) && existsSync(spec)) return spec;
    throw ApplicationFailure.nonRetryable(
      `program ${spec} does not exist on worker ${worker}; register it by name on the workers (ckpt worker --program NAME=PATH)`,
      'ProgramNotRegisteredError',
    );
  }
  throw ApplicationFailure.nonRetryable(
    `program "${spec}" is not registered on worker ${worker} (it has: ${workerProgramNames().join(', ')})`,
    'ProgramNotRegisteredError',
  );
}

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
import {
  checkCommandProgram,
  commandProgram,
  DEFAULT_KILL_GRACE_MS,
  type CommandProgram,
} from '../program/command';
import { CANCEL_GRACE_MS } from './child';
import { activityWorkerIdentity, checkProgramPath } from './allowed-roots';

const registered = new Map<string, string>();
const commands = new Map<string, CommandProgram>();

/** A command program registered on a worker (program/command.ts); `cwd` defaults to the worker's. */
export interface CommandRegistration {
  exec: string;
  evalExec?: string;
  cwd?: string;
  metric?: { name: string; mode: 'min' | 'max' };
  /** SIGTERM → SIGKILL grace in ms (default 10 s). */
  killGraceMs?: number;
}

export type ProgramRegistration = string | TrainingProgram<unknown> | CommandRegistration;

function isCommandRegistration(value: ProgramRegistration): value is CommandRegistration {
  return (
    typeof value === 'object' && value !== null && typeof (value as CommandRegistration).exec === 'string'
  );
}

/**
 * Register programs by name: a module path, a program object whose module is known, or a command
 * (`{ exec: 'python3 train.py', evalExec?, cwd?, metric? }`).
 */
export function registerPrograms(programs: Record<string, ProgramRegistration>): void {
  for (const [name, program] of Object.entries(programs)) {
    if (isCommandRegistration(program)) {
      try {
        commands.set(
          name,
          commandProgram(program.exec, {
            name,
            ...(program.cwd !== undefined ? { cwd: program.cwd } : {}),
            ...(program.evalExec !== undefined ? { evalExec: program.evalExec } : {}),
            ...(program.metric ? { metric: program.metric } : {}),
            ...(program.killGraceMs !== undefined ? { killGraceMs: program.killGraceMs } : {}),
          }),
        );
      } catch (err) {
        throw new ProgramLoadError(`program "${name}": ${(err as Error).message}`, { field: 'programs' });
      }
      registered.delete(name);
      continue;
    }
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
    commands.delete(name);
  }
}

/** Names this worker can run (built in and registered). */
export function workerProgramNames(): string[] {
  return [...new Set([...Object.keys(BUILTIN_PROGRAMS), ...registered.keys(), ...commands.keys()])].sort();
}

/**
 * How long a cancelled training child may take before its process group is killed: a command program's
 * runner first gives its command the command's own grace (then kills it), so it gets that and a margin.
 */
export function childKillGrace(program: string | CommandProgram): number {
  return typeof program === 'string'
    ? CANCEL_GRACE_MS
    : (program.killGraceMs ?? DEFAULT_KILL_GRACE_MS) + CANCEL_GRACE_MS;
}

/**
 * The command program a pipeline's segment or evaluation runs, if it is one: the command its input
 * carries (`ckpt pipeline start --exec`), allowed only when its directory lies under the worker's allowed
 * program roots, or the command registered under the program's name. Undefined for a TypeScript program.
 */
export function commandForChild(spec: string | undefined, exec?: CommandProgram): CommandProgram | undefined {
  if (exec) {
    const command = checkCommandProgram(exec);
    checkProgramPath(command.cwd);
    return command;
  }
  return spec === undefined ? undefined : commands.get(spec);
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

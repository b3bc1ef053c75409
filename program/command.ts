/**
 * Command programs: a training command in any language, run once per segment (train/command-runner.ts),
 * that writes a step's files and publishes them with `ckpt commit`. A command crosses processes and hosts
 * as plain data (this CommandProgram) in a pipeline's input or a worker's registry; nothing is loaded.
 */
import { basename, extname, isAbsolute, resolve } from 'node:path';
import { InvalidArgumentError } from '../checkpoint/errors';
import { PROGRAM_NAME } from './load';

export interface CommandProgram {
  /** Recorded in every checkpoint's meta (`program.name`); a checkpoint is resumed only by its program. */
  name: string;
  /** The training command, split into words (no shell). */
  argv: string[];
  /** The directory the command was given in: its working directory and the base of relative paths. */
  cwd: string;
  /** The evaluation command: prints the checkpoint's metrics as one flat JSON object on stdout. */
  evalArgv?: string[];
  /** SIGTERM → SIGKILL grace on cancellation (ms). Default DEFAULT_KILL_GRACE_MS. */
  killGraceMs?: number;
  /** The primary metric the evaluation prints (default DEFAULT_COMMAND_METRIC). */
  metric?: { name: string; mode: 'min' | 'max' };
}

/** The primary metric of a command program that names none. */
export const DEFAULT_COMMAND_METRIC = { name: 'loss', mode: 'min' } as const;

export const DEFAULT_KILL_GRACE_MS = 10_000;

/** Split a command line into words like a shell would, without one: quotes group, backslash escapes. */
export function splitCommand(text: string, field = 'exec'): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < text.length && '"\\'.includes(text[i + 1]!))
        word += text[++i];
      else word += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote)
    throw new InvalidArgumentError(`--${field}: unterminated ${quote} quote in ${JSON.stringify(text)}`, {
      field,
    });
  if (inWord) words.push(word);
  if (words.length === 0) throw new InvalidArgumentError(`--${field}: the command is empty`, { field });
  return words;
}

/**
 * The default name of a command program: its script's file name without extension (`train.py` → `train`,
 * in `python3 examples/python-mlp/train.py`: the last word that looks like a file), else the command's.
 */
export function defaultCommandName(argv: readonly string[]): string {
  const script = [...argv].reverse().find((w) => !w.startsWith('-') && /\.[A-Za-z0-9]+$/.test(w)) ?? argv[0]!;
  const name = basename(script, extname(script))
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '');
  return name || 'command';
}

/** A command program from what a user typed (`--exec`, `--eval-exec`), resolved against `cwd`. */
export function commandProgram(
  exec: string,
  options: {
    cwd?: string;
    name?: string;
    evalExec?: string;
    killGraceMs?: number;
    metric?: { name: string; mode: 'min' | 'max' };
  } = {},
): CommandProgram {
  const argv = splitCommand(exec, 'exec');
  const name = options.name ?? defaultCommandName(argv);
  if (!PROGRAM_NAME.test(name)) {
    throw new InvalidArgumentError(
      `program name ${JSON.stringify(name)} is not a short identifier (letters, digits, . _ -)`,
      {
        field: 'program',
      },
    );
  }
  return {
    name,
    argv,
    cwd: resolve(options.cwd ?? process.cwd()),
    ...(options.evalExec !== undefined ? { evalArgv: splitCommand(options.evalExec, 'eval-exec') } : {}),
    ...(options.killGraceMs !== undefined ? { killGraceMs: options.killGraceMs } : {}),
    ...(options.metric ? { metric: options.metric } : {}),
  };
}

/** Check a CommandProgram that arrived as data (a pipeline's input, a training request). */
export function checkCommandProgram(value: unknown, field = 'exec'): CommandProgram {
  const c = value as Partial<CommandProgram> | null;
  const bad = (what: string) => new InvalidArgumentError(`${field}: ${what}`, { field });
  if (!c || typeof c !== 'object') throw bad('not an object');
  if (typeof c.name !== 'string' || !PROGRAM_NAME.test(c.name)) throw bad('name must be a short identifier');
  const words = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((w) => typeof w === 'string');
  if (!words(c.argv)) throw bad('argv must be a non-empty list of words');
  if (c.evalArgv !== undefined && !words(c.evalArgv)) throw bad('evalArgv must be a non-empty list of words');
  if (typeof c.cwd !== 'string' || !isAbsolute(c.cwd)) throw bad('cwd must be an absolute path');
  if (c.killGraceMs !== undefined && (!Number.isSafeInteger(c.killGraceMs) || c.killGraceMs < 0))
    throw bad('killGraceMs must be an integer >= 0');
  const m = c.metric as { name?: unknown; mode?: unknown } | undefined;
  if (m !== undefined && (typeof m.name !== 'string' || (m.mode !== 'min' && m.mode !== 'max')))
    throw bad("metric must be { name, mode: 'min' | 'max' }");
  return c as CommandProgram;
}

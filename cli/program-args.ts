/**
 * `--program` and `--config` for the commands that train or evaluate (`train`, `eval`, `sample`,
 * `pipeline start`, `schedule eval create`): the program's own flags join the command's flags once the
 * program is known, so `--depth` works for the GPT and is an unknown flag (exit 2) for another program.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { TrainingProgram } from '../program/contract';
import { commandProgram, type CommandProgram } from '../program/command';
import { DEFAULT_PROGRAM, isProgramPath, loadProgram, type ProgramRegistry } from '../program/load';
import { parseSetting } from '../train/settings';
import { type ParsedArgs, str, UsageError } from './args';

export const PROGRAM_OPTIONS = {
  program: { type: 'string' },
  config: { type: 'string' },
} as const;

/** A command program's flags (program/command.ts): `--program` then names it. */
export const COMMAND_OPTIONS = {
  exec: { type: 'string' },
  'eval-exec': { type: 'string' },
  'kill-grace': { type: 'string' },
} as const;

/** The command program `--exec` gives (with `--eval-exec`, `--kill-grace`, `--program NAME`), if any. */
export function commandProgramFromArgs(args: ParsedArgs): CommandProgram | undefined {
  const exec = str(args, 'exec');
  if (exec === undefined) {
    for (const f of ['eval-exec', 'kill-grace'])
      if (str(args, f) !== undefined) throw new UsageError(`--${f} goes with --exec`, { field: f });
    return undefined;
  }
  const grace = str(args, 'kill-grace');
  const seconds = grace === undefined ? undefined : Number(grace);
  if (seconds !== undefined && !(Number.isFinite(seconds) && seconds >= 0))
    throw new UsageError(`--kill-grace must be a number of seconds >= 0, got ${grace}`, {
      field: 'kill-grace',
    });
  const name = str(args, 'program');
  if (name !== undefined && isProgramPath(name))
    throw new UsageError("--program with --exec is the command program's name, not a path", {
      field: 'program',
    });
  try {
    return commandProgram(exec, {
      ...(name !== undefined ? { name } : {}),
      ...(str(args, 'eval-exec') !== undefined ? { evalExec: str(args, 'eval-exec') } : {}),
      ...(seconds !== undefined ? { killGraceMs: Math.round(seconds * 1000) } : {}),
    });
  } catch (err) {
    throw new UsageError((err as Error).message, { field: 'exec' });
  }
}

/** The value of `--program` in raw argv (before parsing), or undefined. */
export function programFlag(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--program') return argv[i + 1];
    if (a.startsWith('--program=')) return a.slice('--program='.length);
  }
  return undefined;
}

const cache = new Map<string, TrainingProgram<unknown>>();

/** The program `--program` names (default: the built-in GPT), loaded once per process. */
export async function programFromArgv(
  argv: readonly string[],
  registry: ProgramRegistry = {},
): Promise<TrainingProgram<unknown>> {
  const spec = programFlag(argv) ?? DEFAULT_PROGRAM;
  let program = cache.get(spec);
  if (!program) {
    program = await loadProgram(spec, registry);
    cache.set(spec, program);
  }
  return program;
}

/** parseArgs options for a program's own flags. */
export function programOptions(program: TrainingProgram<unknown>): Record<string, { type: 'string' }> {
  return Object.fromEntries(Object.keys(program.flags ?? {}).map((f) => [f, { type: 'string' as const }]));
}

/** Help lines for a program's own flags. */
export function programHelp(program: TrainingProgram<unknown>): string {
  const flags = Object.entries(program.flags ?? {});
  if (flags.length === 0) return `  (program ${program.name} has no flags of its own; use --config)`;
  return flags
    .map(([name, f]) => `  --${`${name} ${f.type === 'string' ? 'TEXT' : 'N'}`.padEnd(24)} ${f.help}`)
    .join('\n');
}

/** `--config JSON|FILE`: an object, inline or in a file. */
export function parseConfigFlag(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  const inline = text.trim().startsWith('{');
  let source = text;
  if (!inline) {
    if (!existsSync(text)) {
      throw new UsageError(`--config ${text}: neither a JSON object nor a file`, { field: 'config' });
    }
    source = readFileSync(text, 'utf8');
  }
  let value: unknown;
  try {
    value = JSON.parse(source);
  } catch (err) {
    throw new UsageError(`--config${inline ? '' : ` ${text}`}: not valid JSON (${(err as Error).message})`, {
      field: 'config',
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UsageError(`--config must be a JSON object`, { field: 'config' });
  }
  return value as Record<string, unknown>;
}

/** The config keys the user set (`--config`, then the program's flags over it) and the flag of each. */
export function programConfigFromArgs(
  program: TrainingProgram<unknown>,
  args: ParsedArgs,
): { config: Record<string, unknown>; configFlags: Record<string, string> } {
  const config = parseConfigFlag(str(args, 'config'));
  const configFlags: Record<string, string> = {};
  for (const [name, spec] of Object.entries(program.flags ?? {})) {
    const text = str(args, name);
    if (text === undefined) continue;
    try {
      config[spec.key] = parseSetting(
        { flag: name, type: spec.type, min: spec.min ?? (spec.type === 'string' ? undefined : 0) },
        text,
      );
    } catch (err) {
      throw new UsageError((err as Error).message, { field: name });
    }
    configFlags[spec.key] = name;
  }
  return { config, configFlags };
}

/** How a program is named in a pipeline's input: a name as given, a path made absolute. */
export function programReference(given: string | undefined): string {
  const spec = given ?? DEFAULT_PROGRAM;
  return isProgramPath(spec) ? resolve(spec) : spec;
}

/** Argument parsing shared by the commands: strict flags, typed values, usage errors that exit 2. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import {
  CheckpointError,
  checkLocation,
  InvalidArgumentError,
  validateName,
  validateStep,
} from '../checkpoint';

export class UsageError extends InvalidArgumentError {}

/** What a command was asked about does not exist (e.g. a workflow id): exit 1, "nothing found". */
export class NotFoundError extends CheckpointError {
  override readonly exitCode = 1 as const;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /**
   * The command takes `--program`: the program's own flags are added to `options` and to the help once
   * main() has loaded it from argv, and `run` gets it. 'or-worker-name': a name this process does not know
   * may be one the workers have registered (`run` then gets no program; `--config` alone configures it).
   */
  takesProgram?: boolean | 'or-worker-name';
  run(args: ParsedArgs): Promise<number>;
}

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** The program `--program` named (commands with takesProgram). */
  program?: import('../program/contract').TrainingProgram<unknown>;
  /** A program name not known here that the workers are expected to have registered. */
  remoteProgram?: string;
}

export const HELP = { help: { type: 'boolean', short: 'h' }, debug: { type: 'boolean' } } as const;

export function parse(
  command: Command,
  argv: string[],
  extraOptions: NonNullable<ParseArgsConfig['options']> = {},
): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...HELP, ...command.options, ...extraOptions },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as ParsedArgs['values'], positionals };
  } catch (err) {
    const e = err as Error & { code?: string };
    const unknown =
      e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? e.message.match(/'(-[^']+)'/)?.[1] : undefined;
    if (unknown) {
      throw new UsageError(
        `${command.name}: unknown flag ${unknown} (ckpt ${command.name} --help lists the flags)`,
        {
          field: unknown.replace(/^-+/, ''),
        },
      );
    }
    throw new UsageError(`${command.name}: ${e.message}`);
  }
}

export function positional(args: ParsedArgs, index: number, name: string, command: string): string {
  const v = args.positionals[index];
  if (v === undefined || v === '') throw new UsageError(`${command}: missing ${name}`, { field: name });
  return v;
}

export function expectPositionals(args: ParsedArgs, count: number, command: string): void {
  if (args.positionals.length > count) {
    throw new UsageError(`${command}: unexpected argument "${args.positionals[count]}"`);
  }
}

export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function flag(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}

export function list(args: ParsedArgs, name: string): string[] {
  const v = args.values[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

export function int(args: ParsedArgs, name: string, min = 0): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(Number(v)) || Number(v) < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}"`, { field: name });
  }
  return Number(v);
}

export function num(args: ParsedArgs, name: string): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n))
    throw new UsageError(`--${name} must be a number, got "${v}"`, { field: name });
  return n;
}

export function step(args: ParsedArgs, name = 'step'): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  try {
    return validateStep(v, `--${name}`);
  } catch (err) {
    throw new UsageError((err as Error).message, { field: name });
  }
}

/**
 * --tag or --source: exactly one path segment (no '/', '.' or '..'), so ROOT/<source_dir>/<tag> cannot
 * leave its source directory. Undefined when the flag is not given.
 */
export function nameArg(args: ParsedArgs, name: 'tag' | 'source'): string | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  try {
    return validateName(v, `--${name}`);
  } catch (err) {
    throw new UsageError((err as Error).message, { field: name });
  }
}

/** The tag a checkpoint directory given by a flag (ROOT/<source_dir>/<tag>) ends in, checked like --tag. */
export function tagOfDir(dir: string, flag = 'dir'): string {
  checkLocation(dir, flag);
  try {
    return validateName(
      dir.replace(/\/+$/, '').split('/').pop() ?? '',
      `the tag of --${flag} (its last part)`,
    );
  } catch (err) {
    throw new UsageError((err as Error).message, { field: flag });
  }
}

export function formatUsage(command: Command): string {
  return `${command.summary}\n\nUsage: ${command.usage}\n`;
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

export function note(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : text + '\n');
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

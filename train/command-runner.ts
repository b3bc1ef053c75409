/**
 * Runs one segment of a command program: finds the resume point, starts the command with the segment's
 * environment (docs/programs.md, "The environment of a segment"), turns its progress lines into
 * TrainEvents, and stops it (SIGTERM, then SIGKILL after the grace period, its whole process group) when
 * the segment is cancelled or the writer lease is lost. The command commits its own checkpoints with
 * `ckpt commit`, fenced by the token this runner's lease gives it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { metaFile, openStore, parseMeta, findLastStep, NoCheckpointError } from '../checkpoint';
import type { CheckpointError } from '../checkpoint/errors';
import { formatWriterToken, WRITER_TOKEN_ENV, type WriterLease } from '../checkpoint/writer';
import { DEFAULT_COMMAND_METRIC, DEFAULT_KILL_GRACE_MS, type CommandProgram } from '../program/command';
import type { EvalContext, TrainingProgram } from '../program/contract';
import {
  CommandCrashedError,
  CommandFailedError,
  ProgramContractError,
  ProgramMismatchError,
} from '../program/errors';
import { recordedProgram } from '../program/meta';
import type { TrainEvent } from './events';
import { resolveResume, TrainingAborted } from './resume';
import type { TrainSummary } from './trainer';

/**
 * Where the package's Python client lives (put first on the command's PYTHONPATH): beside the sources in a
 * checkout, one level up from the compiled tree (dist/) in an installed package.
 */
export const PYTHON_CLIENT_DIR =
  [join(__dirname, '..', 'python'), join(__dirname, '..', '..', 'python')].find((d) =>
    existsSync(join(d, 'temporal_ckpt', '__init__.py')),
  ) ?? join(__dirname, '..', 'python');
const CKPT_BIN = join(__dirname, '..', 'bin', 'ckpt.js');

/** The file descriptor a command writes its progress lines to. */
export const PROGRESS_FD = 3;

export interface CommandSegment {
  dir: string;
  program: CommandProgram;
  /** Absolute target step. */
  steps: number;
  saveEvery: number;
  seed: number;
  config: Record<string, unknown>;
  resume: 'none' | 'last' | { step: number };
  rank: number;
  worldSize: number;
  localRank: number;
  master?: { addr: string; port: number };
  /** Rank 0's writer lease; its token goes to the command, and losing it stops the command. */
  writer?: WriterLease;
  signal: AbortSignal;
  onEvent(event: TrainEvent): void;
  /** A line the command printed (stdout or stderr). */
  onOutput?(line: string): void;
}

interface ProgressLine {
  type?: unknown;
  step?: unknown;
  loss?: unknown;
  metrics?: unknown;
  seconds?: unknown;
  bytes?: unknown;
}

/** A progress line's metrics: its finite numbers (others are dropped), or undefined when none. */
function flatNumbers(value: unknown): Record<string, number> | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const out = Object.fromEntries(
    Object.entries(value).filter(
      (e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1]),
    ),
  );
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The commands started by this process that are still running: killed with it, whatever ends it. */
const running = new Set<ChildProcess>();
let exitHook = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

function watchExit(): void {
  if (exitHook) return;
  exitHook = true;
  // A runner that dies (its worker gone: the IPC channel closed) takes its commands with it.
  process.on('exit', () => {
    for (const child of running) killGroup(child, 'SIGKILL');
  });
}

/** The config a resumed segment gives its command: the checkpoint's, with what the run sets over it. */
async function resumedConfig(
  dir: string,
  step: number,
  program: CommandProgram,
  given: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const store = openStore(dir);
  const meta = parseMeta(await store.read(metaFile(step)), step);
  const recorded = recordedProgram(meta);
  if (recorded.name !== program.name) {
    throw new ProgramMismatchError(
      `${metaFile(step)} was written by program "${recorded.name}"; command program "${program.name}" cannot ` +
        'resume it (name the program with --program, or use another --tag)',
      { file: metaFile(step), field: 'program', step },
    );
  }
  const saved = (meta.config as Record<string, unknown> | undefined) ?? {};
  return { ...saved, ...given };
}

export async function runCommandSegment(segment: CommandSegment): Promise<TrainSummary> {
  const started = Date.now();
  const store = openStore(segment.dir);
  const resumeStep = await resolveResume(store, segment.resume);
  const config =
    resumeStep === null
      ? segment.config
      : await resumedConfig(segment.dir, resumeStep, segment.program, segment.config);
  const startStep = resumeStep ?? 0;
  const summary = (endStep: number, saved: number[], finalLoss: number | null): TrainSummary => ({
    startStep,
    endStep,
    resumedFrom: resumeStep,
    saved,
    finalLoss,
    backend: 'command',
    seconds: (Date.now() - started) / 1000,
    program: segment.program.name,
  });
  if (startStep >= segment.steps) return summary(startStep, [], null);
  if (resumeStep !== null) segment.onEvent({ type: 'resumed', step: resumeStep, seconds: 0, bytes: 0 });

  const env = commandEnv(segment.program, {
    CKPT_DIR: segment.dir,
    CKPT_RESUME_STEP: resumeStep === null ? '' : String(resumeStep),
    CKPT_TARGET_STEP: String(segment.steps),
    CKPT_SAVE_EVERY: String(segment.saveEvery),
    CKPT_SEED: String(segment.seed),
    CKPT_CONFIG: JSON.stringify(config),
    CKPT_PROGRESS_FD: String(PROGRESS_FD),
    RANK: String(segment.rank),
    WORLD_SIZE: String(segment.worldSize),
    LOCAL_RANK: String(segment.localRank),
  });
  delete env.MASTER_ADDR;
  delete env.MASTER_PORT;
  if (segment.master) {
    env.MASTER_ADDR = segment.master.addr;
    env.MASTER_PORT = String(segment.master.port);
  }
  if (segment.writer) env[WRITER_TOKEN_ENV] = formatWriterToken(segment.writer.token);

  // Ranks meet at each commit through records in the store: a record left by a dead attempt must not let
  // rank 0 commit this attempt's step with another attempt's shard. Rank 0 clears what earlier attempts
  // left of the steps ahead (once their writers can no longer write) before its command starts.
  if (segment.writer && segment.worldSize > 1) await segment.writer.clearUncommitted(store, startStep);

  watchExit();
  const child = spawn(segment.program.argv[0]!, segment.program.argv.slice(1), {
    cwd: segment.program.cwd,
    env,
    // Its own process group: a cancellation reaches everything it started (its `ckpt commit` too).
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  running.add(child);
  const saved: number[] = [];
  let lastStep = startStep;
  let finalLoss: number | null = null;
  let lastTime = Date.now();
  let lastProgressStep = startStep;
  const progress = createInterface({ input: child.stdio[PROGRESS_FD] as NodeJS.ReadableStream });
  progress.on('line', (line) => {
    let p: ProgressLine;
    try {
      p = JSON.parse(line) as ProgressLine;
    } catch {
      segment.onOutput?.(`(progress) ${line}`);
      return;
    }
    if (typeof p.step !== 'number') return;
    if (p.type === 'saved') {
      saved.push(p.step);
      segment.onEvent({
        type: 'saved',
        step: p.step,
        seconds: typeof p.seconds === 'number' ? p.seconds : 0,
        bytes: typeof p.bytes === 'number' ? p.bytes : 0,
      });
      return;
    }
    if (typeof p.loss !== 'number') return;
    const now = Date.now();
    const stepsPerSec = now > lastTime ? ((p.step - lastProgressStep) * 1000) / (now - lastTime) : 0;
    lastTime = now;
    lastProgressStep = p.step;
    lastStep = p.step;
    finalLoss = p.loss;
    const metrics = flatNumbers(p.metrics);
    segment.onEvent({
      type: 'progress',
      step: p.step,
      loss: p.loss,
      lr: null,
      stepsPerSec,
      ...(metrics ? { metrics } : {}),
    });
  });
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => segment.onOutput?.(line));
  }

  const grace = segment.program.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  let stopping: string | null = null;
  let killTimer: NodeJS.Timeout | undefined;
  const stop = (why: string) => {
    if (stopping || child.exitCode !== null || child.signalCode !== null) return;
    stopping = why;
    killGroup(child, 'SIGTERM');
    killTimer = setTimeout(() => killGroup(child, 'SIGKILL'), grace);
  };
  const onAbort = () => stop('cancelled');
  if (segment.signal.aborted) onAbort();
  else segment.signal.addEventListener('abort', onAbort, { once: true });
  let lost: CheckpointError | undefined;
  if (segment.writer) {
    segment.writer.onLost = (err) => {
      lost = err;
      stop('writer lease lost');
    };
  }

  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', (err) => {
      running.delete(child);
      reject(
        new CommandCrashedError(
          `program ${segment.program.name}: could not start ${segment.program.argv[0]}: ${err.message}`,
          {
            field: 'exec',
          },
        ),
      );
    });
    child.once('close', (c, s) => resolve([c, s]));
  });
  running.delete(child);
  if (killTimer) clearTimeout(killTimer);
  segment.signal.removeEventListener('abort', onAbort);
  // Whatever it left running in its group goes too.
  killGroup(child, 'SIGKILL');

  if (lost) throw lost;
  if (stopping === 'cancelled') throw new TrainingAborted(lastStep);
  const what = `program ${segment.program.name} (${segment.program.argv.join(' ')})`;
  if (code === 2)
    throw new CommandFailedError(`${what} exited 2: a failure retrying cannot fix`, { field: 'exec' });
  if (code !== 0) {
    throw new CommandCrashedError(
      `${what} ${signal ? `was killed by ${signal}` : `exited ${code}`} at step ${lastStep}; the segment is retried from the last committed step`,
      { field: 'exec' },
    );
  }
  // Rank 0 checks the commit: another rank's command is done once it has handed its files over.
  if (segment.rank !== 0) return summary(segment.steps, saved, finalLoss);
  let last: number | null;
  try {
    last = await findLastStep(store);
  } catch (err) {
    if (!(err instanceof NoCheckpointError)) throw err;
    last = null;
  }
  if (last !== segment.steps) {
    throw new ProgramContractError(
      `${what} exited 0, but the last committed step is ${last ?? 'none'}, not the target ${segment.steps}: ` +
        'a command must commit its target step (ckpt commit) before it exits 0',
      { field: 'exec', step: segment.steps },
    );
  }
  return summary(segment.steps, saved, finalLoss);
}

/** The environment every command of a program gets: the client on PYTHONPATH, `ckpt` in CKPT_BIN. */
function commandEnv(program: CommandProgram, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...extra,
    CKPT_PROGRAM: program.name,
    CKPT_BIN,
    PYTHONPATH: [PYTHON_CLIENT_DIR, process.env.PYTHONPATH].filter(Boolean).join(':'),
  };
  delete env[WRITER_TOKEN_ENV];
  return env;
}

/**
 * A command program as a TrainingProgram for evaluation (train/evaluate.ts gives it the lease, the checks
 * and the eval file): its evaluation command prints the checkpoint's metrics as one flat JSON object, the
 * last line of its stdout. It trains only through runCommandSegment.
 */
export function commandEvalProgram(command: CommandProgram): TrainingProgram<Record<string, unknown>> {
  return {
    name: command.name,
    // The command checks its own checkpoints' versions; any recorded version is its.
    version: Number.MAX_SAFE_INTEGER,
    metric: command.metric ?? { ...DEFAULT_COMMAND_METRIC },
    optimizer: 'program',
    configure: (given) => given,
    start: () => {
      throw new ProgramContractError(
        `command program ${command.name} trains through its command, not start()`,
      );
    },
    evaluate: (ctx) => runEvalCommand(command, ctx),
  };
}

async function runEvalCommand(
  command: CommandProgram,
  ctx: EvalContext<Record<string, unknown>>,
): Promise<Record<string, number>> {
  if (!command.evalArgv) {
    throw new ProgramContractError(
      `command program ${command.name} has no evaluation command (--eval-exec CMD)`,
      { field: 'eval-exec' },
    );
  }
  const argv = command.evalArgv;
  const env = commandEnv(command, {
    CKPT_DIR: typeof ctx.dir === 'string' ? ctx.dir : ctx.dir.location,
    CKPT_STEP: String(ctx.step),
    CKPT_CONFIG: JSON.stringify(ctx.config),
    ...(ctx.data !== undefined ? { CKPT_EVAL_DATA: ctx.data } : {}),
  });
  // Not detached: whoever stops this evaluation (a cancelled activity, Ctrl-C) stops the command too.
  const child = spawn(argv[0]!, argv.slice(1), { cwd: command.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    if (!line.trim().startsWith('{')) ctx.log(`[${command.name}] ${line}`);
  });
  createInterface({ input: child.stderr! }).on('line', (line) => ctx.log(`[${command.name}] ${line}`));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', (err) =>
      reject(new CommandCrashedError(`could not start ${argv[0]}: ${err.message}`, { field: 'eval-exec' })),
    );
    child.once('close', (c, s) => resolve([c, s]));
  });
  const what = `evaluation of program ${command.name} (${argv.join(' ')})`;
  if (code === 2) throw new CommandFailedError(`${what} exited 2`, { field: 'eval-exec', step: ctx.step });
  if (code !== 0) {
    throw new CommandCrashedError(`${what} ${signal ? `was killed by ${signal}` : `exited ${code}`}`, {
      field: 'eval-exec',
      step: ctx.step,
    });
  }
  const last = [...lines].reverse().find((l) => l.trim() !== '');
  let metrics: unknown;
  try {
    metrics = JSON.parse(last ?? '');
  } catch {
    metrics = undefined;
  }
  if (metrics === null || typeof metrics !== 'object' || Array.isArray(metrics)) {
    throw new ProgramContractError(
      `${what} must print its metrics as one JSON object on the last line of stdout; got ${JSON.stringify(last ?? '')}`,
      { field: 'eval-exec', step: ctx.step },
    );
  }
  return metrics as Record<string, number>;
}

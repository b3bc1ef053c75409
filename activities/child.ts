/**
 * Runs a `ckpt` command in a child process for an activity. tfjs kernels block the event loop and keep
 * global state, so training and evaluation run in a child: the worker's event loop stays free to heartbeat,
 * and a child that dies takes nothing else with it. The child gets an IPC channel and exits when it closes,
 * so a killed worker never leaves an orphan training on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { isRetryable } from '../checkpoint/errors';
import type { DoneEvent, TrainEvent } from '../train/events';
import { isTrainEvent } from '../train/events';
import type { TrainRequest } from '../train/request';
import type { SegmentResult } from './types';

const BIN = join(__dirname, '..', 'bin', 'ckpt.js');

/**
 * How long a cancelled child may take to stop by itself before it is killed. A cancelled segment must stop
 * writing within seconds (the run may already have another writer: a reset run, a retry), and killing is
 * safe: a commit is atomic (manifest last), so a save cut short leaves orphan files, never a checkpoint.
 */
export const CANCEL_GRACE_MS = 2000;

/**
 * How often a running child's activity records a heartbeat. The worker sends at most one per heartbeat
 * throttle interval (workers/worker.ts, 1 s), and a cancellation reaches the activity only in the answer
 * to one: recording twice as often keeps a heartbeat ready at every send.
 */
export const HEARTBEAT_TICK_MS = 500;

/**
 * Children run in their own process group (detached: setsid), so a cancellation signals the child and
 * anything it started, and a Ctrl-C at the worker's terminal reaches the worker only: the worker decides
 * when its children stop.
 */
export function spawnCkpt(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env,
    detached: true,
  });
}

/** Signal the child's whole process group; false when none of it is left. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): boolean {
  if (child.pid === undefined) return false;
  try {
    process.kill(-child.pid, signal);
    return true;
  } catch {
    // ESRCH: the group is gone. Fall back to the child itself in case it left its group.
    return child.kill(signal);
  }
}

/**
 * Set in the environment of every child started here: a failing `ckpt` then writes one ErrorReport line on
 * stdout (cli/main.ts) besides its `ckpt: error: …` line on stderr, so the activity fails with the error's
 * own type and retryability (activities/failure.ts) instead of guessing them from the exit code. Only
 * children get it: a person's `ckpt … --json` keeps a stdout that holds results only.
 */
export const ERROR_REPORT_ENV = 'CKPT_ERROR_JSON';

/** Why a `ckpt` child failed: the error's class name, its class's decision and its one-line message. */
export interface ErrorReport {
  type: 'error';
  errorType: string;
  retryable: boolean;
  message: string;
}

export function errorReport(err: unknown, message: string): ErrorReport {
  const errorType = err instanceof Error ? err.name : 'Error';
  return { type: 'error', errorType, retryable: isRetryable(err), message };
}

export function isErrorReport(
  event: Record<string, unknown>,
): event is Record<string, unknown> & ErrorReport {
  return (
    event.type === 'error' &&
    typeof event.errorType === 'string' &&
    typeof event.retryable === 'boolean' &&
    typeof event.message === 'string'
  );
}

/** The SegmentResult of a training child's `done` event (`ckpt train --progress-json`). */
export function segmentResult(done: DoneEvent, attempt: number): SegmentResult {
  return {
    startStep: done.startStep,
    endStep: done.endStep,
    saved: done.saved,
    finalLoss: done.finalLoss,
    backend: done.backend,
    seconds: done.seconds,
    attempt,
    ...(done.inMemory ? { inMemory: true } : {}),
  };
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderrTail: string;
  /** The child's own account of its failure; absent when it died without giving one. */
  error?: ErrorReport;
}

export interface ChildOptions {
  /** Each stdout line parsed as JSON (lines that are not JSON are kept in stdout only). */
  onEvent?: (event: TrainEvent) => void;
  /** A training request sent over the IPC channel (the command is then `train --from-ipc`). */
  request?: TrainRequest;
  /** Called every `tickMs` while the child runs (heartbeats). */
  onTick?: () => void;
  tickMs?: number;
  /**
   * Abort → SIGTERM to the child's process group (the child stops at a step boundary), then SIGKILL to the
   * group after `killGraceMs` (default CANCEL_GRACE_MS).
   */
  signal?: AbortSignal;
  killGraceMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Called once the child runs, with a way to send it IPC messages (lost when it has exited). */
  onStart?: (send: (message: unknown) => void) => () => void;
}

/**
 * A warm standby: a child that has already loaded the CLI, the model code and tfjs (about a second of
 * start-up on a small machine) and waits for its command over IPC. A segment or an evaluation takes it;
 * the next one starts when that child exits (not alongside it, where it would take CPU from training),
 * so consecutive segments, and the retry of a segment whose worker died, do not pay the start-up. It is
 * unref'd: it never keeps a worker alive, and it exits when the worker does. CKPT_WARM_CHILD=0 turns it off.
 */
let standby: ChildProcess | undefined;

export const usable = (child: ChildProcess | undefined): child is ChildProcess =>
  child !== undefined && child.connected && child.exitCode === null && child.signalCode === null;

/** Whether the child (its process, IPC channel and output pipes) keeps this process alive. */
export function holdOpen(child: ChildProcess, hold: boolean): void {
  for (const handle of [child, child.channel, child.stdout, child.stderr] as Array<
    { ref?(): void; unref?(): void } | null | undefined
  >) {
    if (hold) handle?.ref?.();
    else handle?.unref?.();
  }
}

export const warmChildEnabled = () => process.env.CKPT_WARM_CHILD !== '0';

export function childEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...process.env, CKPT_LOG_FORMAT: 'json', [ERROR_REPORT_ENV]: '1', ...extra };
}

/** Start the standby if there is none (a training worker calls this at start-up). */
export function prewarmChild(): void {
  if (!warmChildEnabled() || usable(standby)) return;
  const child = spawnCkpt([], childEnv({ CKPT_STANDBY: '1' }));
  child.on('error', () => undefined);
  child.once('exit', () => {
    if (standby === child) standby = undefined;
  });
  // It writes nothing before its command, so its unread pipes cannot fill while it waits.
  holdOpen(child, false);
  standby = child;
}

/** Process id of the waiting standby, if any (for tests and diagnostics). */
export function standbyPid(): number | undefined {
  return usable(standby) ? standby.pid : undefined;
}

/** The standby with `args` sent to it, or undefined when there is none ready. */
export function takeStandby(args: string[], request?: TrainRequest): ChildProcess | undefined {
  const child = standby;
  standby = undefined;
  if (!usable(child)) return undefined;
  try {
    child.send({ type: 'run', argv: args, ...(request !== undefined ? { request } : {}) });
  } catch {
    child.kill('SIGKILL');
    return undefined;
  }
  holdOpen(child, true);
  return child;
}

export function runCkpt(args: string[], options: ChildOptions = {}): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    // A standby was started with the worker's environment: only a command without extra variables takes it.
    const warm = !options.env && warmChildEnabled() ? takeStandby(args, options.request) : undefined;
    const child = warm ?? spawnCkpt(args, childEnv(options.env));
    if (!warm && options.request !== undefined) child.send({ type: 'request', request: options.request });
    // The next standby starts once this child is done, so its loading does not compete with this one's
    // training for the CPU.
    const stopSending = options.onStart?.((message) => {
      if (child.connected) child.send(message as object, () => undefined);
    });
    let stdout = '';
    let stderr = '';
    let error: ErrorReport | undefined;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      stdout += line + '\n';
      if (!line.startsWith('{')) return;
      try {
        const event = JSON.parse(line) as Record<string, unknown>;
        if (isErrorReport(event)) error = event;
        else if (isTrainEvent(event)) options.onEvent?.(event);
      } catch {
        // not an event line
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8000);
    });
    const tick = options.onTick
      ? setInterval(options.onTick, options.tickMs ?? HEARTBEAT_TICK_MS)
      : undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      signalGroup(child, 'SIGTERM');
      killTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), options.killGraceMs ?? CANCEL_GRACE_MS);
    };
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      if (tick) clearInterval(tick);
      stopSending?.();
      reject(err);
    });
    child.on('close', (code, signal) => {
      if (tick) clearInterval(tick);
      stopSending?.();
      if (killTimer) clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', onAbort);
      // Whatever a cancelled child started goes with it.
      if (options.signal?.aborted) signalGroup(child, 'SIGKILL');
      if (!options.env) prewarmChild();
      resolve({ code, signal, stdout, stderrTail: lastErrorLine(stderr), error });
    });
  });
}

/** The child's one-line error ("ckpt: error: …"), else the last lines of stderr. */
export function lastErrorLine(stderr: string): string {
  const match = stderr.match(/ckpt: error: .*$/m);
  if (match) return match[0].replace(/^ckpt: error: /, '');
  return stderr.trim().split('\n').slice(-5).join('\n');
}

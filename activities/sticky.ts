/**
 * Sticky segments: a training child that stays alive after its segment, with the run's state in memory,
 * for the run's next segment on this worker. The worker also polls a task queue of its own
 * (`<train queue>@<identity>`, as in Temporal's worker-specific task queues); a segment's result names it,
 * and the pipeline schedules the run's next segment there, falling back to the shared queue when this
 * worker does not take it in time (workflows/pipeline.ts).
 *
 * The kept state is only a shortcut: the child holds no lease while idle (each segment takes it again, as
 * any writer does), and it continues from memory only when the directory's last commit is the one it made
 * itself, under the writer epoch just before the new one (train/trainer.ts, warmStateFits). Anything else
 * (another run on this worker, other settings, a commit by someone else, a dead child) is the ordinary
 * path: a fresh child that reads the last checkpoint back.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { isTrainEvent, type TrainEvent } from '../train/events';
import { STICKY_IDLE, STICKY_NEXT, type TrainRequest } from '../train/request';
import {
  CANCEL_GRACE_MS,
  childEnv,
  HEARTBEAT_TICK_MS,
  holdOpen,
  isErrorReport,
  lastErrorLine,
  prewarmChild,
  signalGroup,
  spawnCkpt,
  takeStandby,
  usable,
  type ChildOptions,
  type ChildResult,
  type ErrorReport,
} from './child';

/** How long an idle child keeps its run's state before it exits (CKPT_STICKY_IDLE overrides, in ms). */
export const STICKY_IDLE_MS = 300_000;

interface Sticky {
  /** This worker's own task queue; undefined: sticky segments are off. */
  queue?: string;
  /** At most this many idle children (the worker's slots). */
  maxIdle: number;
}
const sticky: Sticky = { maxIdle: 1 };

/** The worker-specific task queue of a training worker. */
export function stickyQueueName(trainQueue: string, identity: string): string {
  return `${trainQueue}@${identity}`;
}

/** Turn sticky segments on for this worker (workers/worker.ts), or off (queue undefined). */
export function configureSticky(queue: string | undefined, maxIdle = 1): void {
  sticky.queue = queue;
  sticky.maxIdle = Math.max(1, maxIdle);
  if (!queue) for (const dir of [...idle.keys()]) endIdle(dir);
}

export function stickyQueue(): string | undefined {
  return sticky.queue;
}

/** What makes two requests the same run for the kept state (the child checks it too). */
function runKey(r: TrainRequest): string {
  return JSON.stringify([r.dir, r.program, r.config, r.configFlags ?? {}, r.run]);
}

interface IdleChild {
  child: TrainingChild;
  key: string;
  timer: NodeJS.Timeout;
}
/** Idle children by checkpoint directory, oldest first. */
const idle = new Map<string, IdleChild>();

/** Process id of the idle child kept for `dir`, if any (tests, diagnostics). */
export function idleChildPid(dir: string): number | undefined {
  const entry = idle.get(dir);
  return entry && usable(entry.child.process) ? entry.child.process.pid : undefined;
}

function endIdle(dir: string): void {
  const entry = idle.get(dir);
  if (!entry) return;
  idle.delete(dir);
  clearTimeout(entry.timer);
  entry.child.end();
}

/** The idle child of this run, if one is kept and alive; any other child of the directory ends. */
function takeIdle(request: TrainRequest): TrainingChild | undefined {
  const entry = idle.get(request.dir);
  if (!entry) return undefined;
  if (entry.key !== runKey(request) || !usable(entry.child.process)) {
    endIdle(request.dir);
    return undefined;
  }
  idle.delete(request.dir);
  clearTimeout(entry.timer);
  return entry.child;
}

function keepIdle(request: TrainRequest, child: TrainingChild): void {
  endIdle(request.dir);
  while (idle.size >= sticky.maxIdle) endIdle(idle.keys().next().value!);
  const ms = Number(process.env.CKPT_STICKY_IDLE ?? STICKY_IDLE_MS);
  const timer = setTimeout(() => {
    if (idle.get(request.dir)?.child === child) endIdle(request.dir);
  }, ms);
  timer.unref();
  idle.set(request.dir, { child, key: runKey(request), timer });
}

/**
 * Run one segment in this run's idle child when there is one, else in a new child that stays. Resolves
 * as runCkpt does; `kept` says whether the child is now idle with the state (and the result's queue may
 * be offered to the pipeline).
 */
export async function runStickySegment(
  request: TrainRequest,
  options: ChildOptions,
): Promise<ChildResult & { kept: boolean; reused: boolean; pid?: number }> {
  const request1 = { ...request, sticky: true };
  const reusedChild = takeIdle(request1);
  // A new child must not sit beside idle ones that hold other runs' state (and, on a GPU, its memory):
  // idle and running children together stay within the worker's slots.
  while (!reusedChild && idle.size > 0 && idle.size + running >= sticky.maxIdle)
    endIdle(idle.keys().next().value!);
  const child = reusedChild ?? TrainingChild.start(request1);
  running += 1;
  try {
    const result = await child.run(request1, options, reusedChild !== undefined);
    if (result.kept) keepIdle(request1, child);
    return { ...result, reused: reusedChild !== undefined, pid: child.process.pid };
  } finally {
    running -= 1;
  }
}

/** Segments running in sticky children now. */
let running = 0;

/** A training child that may run several segments of one run, one at a time. */
class TrainingChild {
  private segment:
    | {
        options: ChildOptions;
        stdout: string;
        stderr: string;
        error?: ErrorReport;
        done: boolean;
        idle: boolean;
        finish: (result: ChildResult & { kept: boolean }) => void;
      }
    | undefined;
  private closed = false;

  private constructor(readonly process: ChildProcess) {
    const lines = createInterface({ input: process.stdout! });
    lines.on('line', (line) => {
      const s = this.segment;
      if (!s) return;
      s.stdout += line + '\n';
      if (!line.startsWith('{')) return;
      try {
        const event = JSON.parse(line) as Record<string, unknown>;
        if (isErrorReport(event)) s.error = event;
        else if (isTrainEvent(event)) {
          if (event.type === 'done') s.done = true;
          s.options.onEvent?.(event as TrainEvent);
          this.maybeIdle();
        }
      } catch {
        // not an event line
      }
    });
    process.stderr!.on('data', (d: Buffer) => {
      if (this.segment) this.segment.stderr = (this.segment.stderr + d.toString()).slice(-8000);
    });
    process.on('message', (msg: { type?: string } | null) => {
      if (msg?.type !== STICKY_IDLE || !this.segment) return;
      this.segment.idle = true;
      this.maybeIdle();
    });
    process.on('error', () => undefined);
    process.on('close', (code, signal) => {
      this.closed = true;
      const s = this.segment;
      this.segment = undefined;
      s?.finish({
        code,
        signal,
        stdout: s.stdout,
        stderrTail: lastErrorLine(s.stderr),
        error: s.error,
        kept: false,
      });
      prewarmChild();
    });
  }

  /** A new child: the warm standby when there is one, else a fresh process. */
  static start(request: TrainRequest): TrainingChild {
    const args = ['train', '--from-ipc', '--progress-json'];
    const warm = takeStandby(args, request);
    const child = warm ?? spawnCkpt(args, childEnv());
    if (!warm) child.send({ type: 'request', request });
    return new TrainingChild(child);
  }

  /** Ask an idle child to exit (it disposes of its state); killed if it does not within the grace. */
  end(): void {
    if (this.closed) return;
    try {
      this.process.send({ type: STICKY_NEXT }, () => undefined);
    } catch {
      // its channel is gone: it is exiting already
    }
    setTimeout(() => {
      if (!this.closed) signalGroup(this.process, 'SIGKILL');
    }, CANCEL_GRACE_MS).unref();
  }

  /** The segment ended well once the child has said both `done` (stdout) and idle (IPC). */
  private maybeIdle(): void {
    const s = this.segment;
    if (!s || !s.done || !s.idle) return;
    this.segment = undefined;
    s.finish({
      code: 0,
      signal: null,
      stdout: s.stdout,
      stderrTail: lastErrorLine(s.stderr),
      error: s.error,
      kept: true,
    });
  }

  run(
    request: TrainRequest,
    options: ChildOptions,
    reused: boolean,
  ): Promise<ChildResult & { kept: boolean }> {
    const child = this.process;
    return new Promise((resolve) => {
      if (this.closed) {
        resolve({
          code: null,
          signal: null,
          stdout: '',
          stderrTail: 'the kept child had exited',
          kept: false,
        });
        return;
      }
      holdOpen(child, true);
      const stopSending = options.onStart?.((message) => {
        if (child.connected) child.send(message as object, () => undefined);
      });
      const tick = options.onTick
        ? setInterval(options.onTick, options.tickMs ?? HEARTBEAT_TICK_MS)
        : undefined;
      let killTimer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        signalGroup(child, 'SIGTERM');
        killTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), options.killGraceMs ?? CANCEL_GRACE_MS);
      };
      this.segment = {
        options,
        stdout: '',
        stderr: '',
        done: false,
        idle: false,
        finish: (result) => {
          if (tick) clearInterval(tick);
          stopSending?.();
          if (killTimer) clearTimeout(killTimer);
          options.signal?.removeEventListener('abort', onAbort);
          // Whatever a cancelled child started goes with it.
          if (options.signal?.aborted) signalGroup(child, 'SIGKILL');
          // Idle, it must not keep the worker alive.
          if (result.kept) holdOpen(child, false);
          resolve(result);
        },
      };
      if (reused) child.send({ type: STICKY_NEXT, request }, () => undefined);
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

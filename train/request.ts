/**
 * A training run as one typed message: what a worker's activity sends its training child over the IPC
 * channel (`ckpt train --from-ipc`), and what `ckpt train`'s flags are turned into. The loop's settings
 * are RunSettings (train/settings.ts), the program's its config.
 */
import { InvalidArgumentError } from '../checkpoint/errors';
import type { RunSettings } from './settings';
import type { TakeOver } from '../checkpoint/writer';
import { checkCommandProgram, type CommandProgram } from '../program/command';

export interface TrainRequest {
  /** The checkpoint directory: ROOT/<source_dir>/<tag> (a path or s3://…). */
  dir: string;
  /** Absolute target step. */
  steps: number;
  saveEvery: number;
  resume: 'none' | 'last' | { step: number };
  /** Accept a checkpoint saved with another world size. */
  reshard?: boolean;
  /** A module path or a built-in program name. */
  program: string;
  config: Record<string, unknown>;
  /** Config keys by the flag that set them (so a contradiction names the flag typed). */
  configFlags?: Record<string, string>;
  run: RunSettings;
  /**
   * How rank 0 takes the directory's writer lease (checkpoint/writer.ts). A pipeline's segment gives its
   * workflow id as the claim, may take over its own earlier attempt, and is gated: its worker sends
   * WRITER_CONFIRMED messages while the Temporal server confirms the attempt. Default: a free directory
   * only, renewed on a timer.
   */
  writer?: { claim: string | null; takeOver: TakeOver; gated: boolean };
  /** A command program (train/command-runner.ts): run instead of a TypeScript program; `program` is its name. */
  exec?: CommandProgram;
  /**
   * Sticky segments (activities/sticky.ts): after this run the child keeps its state in memory, tells its
   * worker STICKY_IDLE and waits for the next request of the same run (STICKY_NEXT) or its end.
   */
  sticky?: boolean;
}

/** Child → worker: the segment is done and its state is kept; `step` is where it stands. */
export const STICKY_IDLE = 'sticky-idle';
/** Worker → idle child: the next segment's request (`{ type, request }`). */
export const STICKY_NEXT = 'sticky-next';

/**
 * The IPC message a worker sends its training child each time the Temporal server confirmed that the
 * child's activity attempt is still the current one: `{ type, at }`, `at` in ms since the Unix epoch.
 */
export const WRITER_CONFIRMED = 'writer-confirmed';

/** The request a worker sends right after starting the child (see bin/ckpt.js, which keeps it). */
export function receiveTrainRequest(): Promise<TrainRequest> {
  const take = (globalThis as { ckptIpcRequest?: () => Promise<unknown> }).ckptIpcRequest;
  if (!take) {
    throw new InvalidArgumentError('--from-ipc: this process has no IPC channel to its parent', {
      field: 'from-ipc',
    });
  }
  return take().then(checkRequest);
}

export function checkRequest(value: unknown): TrainRequest {
  const r = value as Partial<TrainRequest> | undefined;
  const bad = (field: string) =>
    new InvalidArgumentError(`--from-ipc: the training request has no valid ${field}`, { field });
  if (!r || typeof r !== 'object') throw bad('body');
  if (typeof r.dir !== 'string' || r.dir === '') throw bad('dir');
  if (!Number.isSafeInteger(r.steps)) throw bad('steps');
  if (!Number.isSafeInteger(r.saveEvery)) throw bad('saveEvery');
  if (typeof r.program !== 'string') throw bad('program');
  if (typeof r.config !== 'object' || r.config === null) throw bad('config');
  if (typeof r.run !== 'object' || r.run === null) throw bad('run');
  if (r.exec !== undefined) checkCommandProgram(r.exec, 'exec');
  return r as TrainRequest;
}

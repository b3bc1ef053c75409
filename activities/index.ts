/**
 * Activities: thin wrappers over the library that do the I/O, heartbeat, honour cancellation and turn
 * library errors into Temporal failures (bad input and incompatible checkpoints are non-retryable).
 * Training and evaluation run in child processes (see child.ts); listing, discovery and pruning are light
 * and run in the worker.
 */
import { activityInfo, Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import {
  CheckpointError,
  committedSteps,
  evalFile,
  findLargestModel as findLargestTag,
  findLastStep as findLastGoodStep,
  listCheckpoints as listAll,
  NoCheckpointError,
  openStore,
  pruneCheckpoints as prune,
  type RetentionPolicy,
} from '../checkpoint';
import { runCkpt, segmentResult, type ChildResult } from './child';
import { emitActivityEvent, emitSegmentDone, forwardTrainingEvent } from './observe';
export { observeActivities, type ActivityEvent } from './observe';
import { trainArgs } from './train-args';
export { trainArgs };
import type {
  CheckpointSummary,
  EvalSummary,
  PruneSummary,
  SegmentInput,
  SegmentProgress,
  SegmentResult,
} from './types';

export * from './types';
import { trainRank } from './rank';
export { trainRank };

function failureFromChild(what: string, result: ChildResult): ApplicationFailure {
  const message = `${what} failed (${result.signal ? `signal ${result.signal}` : `exit ${result.code}`}): ${result.stderrTail}`;
  // Exit 2 is bad input or an incompatible checkpoint: retrying elsewhere cannot help.
  if (result.code === 2) return ApplicationFailure.nonRetryable(message, 'InvalidArgumentError');
  return ApplicationFailure.retryable(message, 'ChildProcessError');
}

function toFailure(err: unknown): unknown {
  if (err instanceof CheckpointError && err.exitCode === 2) {
    return ApplicationFailure.nonRetryable(err.message, err.name);
  }
  return err;
}

/**
 * Train from the last committed, verified checkpoint in `dir` (or from scratch) to `toStep`, saving every
 * `saveEvery` steps. Heartbeats carry {step, loss}; a retry after a worker died resumes from whatever the
 * dead attempt committed.
 */
export async function trainSegment(input: SegmentInput): Promise<SegmentResult> {
  if (input.flags.noop) return noopSegment(input);
  const ctx = Context.current();
  let progress: SegmentProgress = { step: -1, loss: null };
  let done: Record<string, unknown> | undefined;
  const result = await runCkpt(
    [
      'train',
      '--dir',
      input.dir,
      '--steps',
      String(input.toStep),
      '--save-every',
      String(input.saveEvery),
      '--resume',
      '--progress-json',
      ...trainArgs(input.flags),
    ],
    {
      signal: ctx.cancellationSignal,
      onTick: () => ctx.heartbeat(progress),
      tickMs: 1000,
      onEvent: (event) => {
        forwardTrainingEvent(input.dir, event);
        if (event.type === 'progress') progress = { step: event.step as number, loss: event.loss as number };
        if (event.type === 'saved') {
          ctx.log.info('checkpoint committed', {
            dir: input.dir,
            step: event.step,
            seconds: event.seconds,
            bytes: event.bytes,
          });
        }
        if (event.type === 'done') done = event;
      },
    },
  );
  if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason ?? new Error('cancelled');
  if (result.code !== 0 || !done)
    throw failureFromChild(`training ${input.dir} to step ${input.toStep}`, result);
  emitSegmentDone(input.dir, done);
  return segmentResult(done, activityInfo().attempt);
}

/** The no-op training mode (TrainFlags.noop): no child, no model, no checkpoint; the step just advances. */
function noopSegment(input: SegmentInput): SegmentResult {
  return {
    startStep: input.fromStep ?? input.toStep,
    endStep: input.toStep,
    saved: [],
    finalLoss: null,
    backend: 'noop',
    seconds: 0,
    attempt: activityInfo().attempt,
  };
}

/** Validation bits-per-byte of one checkpoint; writes eval_<step>.json beside it. */
export async function evaluateCheckpoint(input: {
  dir: string;
  step: number;
  data?: string;
}): Promise<EvalSummary> {
  const ctx = Context.current();
  const args = ['eval', input.dir, '--step', String(input.step), '--json'];
  if (input.data) args.push('--data', input.data);
  const started = Date.now();
  const result = await runCkpt(args, {
    signal: ctx.cancellationSignal,
    onTick: () => ctx.heartbeat({ step: input.step }),
  });
  if (result.code !== 0) throw failureFromChild(`evaluating step ${input.step} of ${input.dir}`, result);
  const parsed = JSON.parse(result.stdout) as EvalSummary;
  emitActivityEvent({
    type: 'evaluated',
    dir: input.dir,
    step: input.step,
    seconds: (Date.now() - started) / 1000,
    metrics: { val_bpb: parsed.val_bpb, val_loss: parsed.val_loss },
  });
  return { step: parsed.step, val_bpb: parsed.val_bpb, val_loss: parsed.val_loss };
}

/** Committed steps that have no eval_<step>.json yet, ascending. */
export async function stepsWithoutEval(input: { dir: string }): Promise<number[]> {
  const store = openStore(input.dir);
  const steps = await committedSteps(store);
  const out: number[] = [];
  for (const step of steps) if (!(await store.exists(evalFile(step)))) out.push(step);
  return out;
}

export async function findLargestModel(input: { checkpointsDir: string }): Promise<string | null> {
  try {
    return await findLargestTag(input.checkpointsDir);
  } catch (err) {
    if (err instanceof NoCheckpointError) return null;
    throw toFailure(err);
  }
}

/** The last committed, verified step, or null when there is none yet. */
export async function findLastStep(input: { dir: string }): Promise<number | null> {
  try {
    return await findLastGoodStep(input.dir);
  } catch (err) {
    if (err instanceof NoCheckpointError) return null;
    throw toFailure(err);
  }
}

export async function listCheckpoints(input: { dir: string }): Promise<CheckpointSummary[]> {
  try {
    return (await listAll(input.dir)).map((c) => ({
      step: c.step,
      committed: c.committed,
      bytes: c.bytes,
      metrics: c.metrics,
    }));
  } catch (err) {
    throw toFailure(err);
  }
}

export async function pruneCheckpoints(input: {
  dir: string;
  policy: RetentionPolicy;
  dryRun?: boolean;
}): Promise<PruneSummary> {
  try {
    const result = await prune(input.dir, input.policy, { dryRun: input.dryRun });
    return { keep: result.keep, remove: result.remove, deleted: result.deleted };
  } catch (err) {
    throw toFailure(err);
  }
}

/** Activities that need a training slot (model compute). */
export const trainActivities = { trainSegment, trainRank, evaluateCheckpoint };
/** Light activities for the control worker. */
export const controlActivities = {
  stepsWithoutEval,
  findLargestModel,
  findLastStep,
  listCheckpoints,
  pruneCheckpoints,
};
export type TrainActivities = typeof trainActivities;
export type ControlActivities = typeof controlActivities;

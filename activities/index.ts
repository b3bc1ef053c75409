/**
 * Activities: thin wrappers over the library that do the I/O, heartbeat, honour cancellation and turn
 * library errors into Temporal failures (failure.ts: retried only when the error's class allows it).
 * Training and evaluation run in child processes (see child.ts); listing, discovery and pruning are light
 * and run in the worker.
 */
import { activityInfo, Context } from '@temporalio/activity';
import {
  committedSteps,
  evalFile,
  findLargestModel as findLargestTag,
  findLastStep as findLastGoodStep,
  listCheckpoints as listAll,
  NoCheckpointError,
  openStore,
  pruneCheckpoints as prune,
  copyCheckpoints as copy,
  releaseClaim,
  verifyCheckpoint as verify,
  type CopyResult,
  type VerifyResult,
  type RetentionPolicy,
} from '../checkpoint';
import { withAllowedRoots } from './allowed-roots';
import { runCkpt, segmentResult, type ChildOptions } from './child';
import { gpuSlotsConfigured, withGpuSlot } from './gpus';
import { runStickySegment, stickyQueue } from './sticky';
import { activityFailure, childFailure } from './failure';
import type { DoneEvent } from '../train/events';
import { emitActivityEvent, emitSegmentDone, forwardTrainingEvent } from './observe';
export { observeActivities, type ActivityEvent } from './observe';
import { trainingOf, trainRequest } from './training';
import { childKillGrace, commandForChild, programForChild } from './programs';
import { confirmAttempt, writerSettings } from './writer-gate';
export { trainingOf, trainRequest };
export { registerPrograms, workerProgramNames } from './programs';
export { configureAllowedRoots } from './allowed-roots';
import type {
  CheckpointSummary,
  EvalInput,
  EvalSummary,
  PruneSummary,
  SegmentInput,
  SegmentProgress,
  SegmentResult,
} from './types';

export * from './types';
import { trainRank } from './rank';
export { trainRank };

/**
 * Train from the last committed, verified checkpoint in `dir` (or from scratch) to `toStep`, saving every
 * `saveEvery` steps. Heartbeats carry {step, loss}; a retry after a worker died resumes from whatever the
 * dead attempt committed.
 */
export async function trainSegment(input: SegmentInput): Promise<SegmentResult> {
  const training = trainingOf(input);
  if (training.noop) return noopSegment(input);
  const program = commandForChild(training.program, training.exec) ?? programForChild(training.program);
  const ctx = Context.current();
  let progress: SegmentProgress = { step: -1, loss: null };
  let done: DoneEvent | undefined;
  const request = { ...trainRequest(input, program), writer: writerSettings(ctx) };
  // Command programs keep today's path: their state lives in their own process, not in ours. So do GPU
  // slots, whose child is started for one segment on its GPU.
  const sticky = typeof program === 'string' && !gpuSlotsConfigured() ? stickyQueue() : undefined;
  const options: ChildOptions = {
    onStart: (send) => confirmAttempt(ctx, send),
    signal: ctx.cancellationSignal,
    killGraceMs: childKillGrace(program),
    onTick: () => ctx.heartbeat(progress),
    onEvent: (event) => {
      forwardTrainingEvent(input.dir, event);
      if (event.type === 'progress')
        progress = {
          step: event.step,
          loss: event.loss,
          ...(event.metrics ? { metrics: event.metrics } : {}),
        };
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
  };
  // On a GPU host the child sees only its slot's GPU (activities/gpus.ts).
  const result = sticky
    ? await runStickySegment(request, options)
    : await withGpuSlot((env) =>
        runCkpt(['train', '--from-ipc', '--progress-json'], { ...options, ...(env ? { env } : {}), request }),
      );
  if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason ?? new Error('cancelled');
  if (result.code !== 0 || !done) throw childFailure(`training ${input.dir} to step ${input.toStep}`, result);
  emitSegmentDone(input.dir, done);
  const kept = 'kept' in result && result.kept;
  return { ...segmentResult(done, activityInfo().attempt), ...(kept ? { stickyQueue: sticky } : {}) };
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

/** Evaluate one checkpoint with its program; writes eval_<step>.json beside it. */
export async function evaluateCheckpoint(input: EvalInput): Promise<EvalSummary> {
  const ctx = Context.current();
  const args = ['eval', input.dir, '--step', String(input.step), '--json'];
  const command = commandForChild(input.program, input.exec);
  if (command) args.push('--command-json', JSON.stringify(command));
  else if (input.program) args.push('--program', programForChild(input.program));
  if (input.data) args.push('--data', input.data);
  const started = Date.now();
  const result = await withGpuSlot((env) =>
    runCkpt(args, {
      ...(env ? { env } : {}),
      signal: ctx.cancellationSignal,
      onTick: () => ctx.heartbeat({ step: input.step }),
    }),
  );
  if (result.code !== 0) throw childFailure(`evaluating step ${input.step} of ${input.dir}`, result);
  const parsed = JSON.parse(result.stdout) as Record<string, unknown> & { metric: EvalSummary['metric'] };
  const metrics = Object.fromEntries(
    Object.entries(parsed).filter(([k, v]) => k !== 'step' && typeof v === 'number'),
  ) as Record<string, number>;
  emitActivityEvent({
    type: 'evaluated',
    dir: input.dir,
    step: input.step,
    seconds: (Date.now() - started) / 1000,
    metrics,
  });
  return { step: input.step, metrics, metric: parsed.metric };
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
    throw activityFailure(err);
  }
}

/** The last committed, verified step, or null when there is none yet. */
export async function findLastStep(input: { dir: string }): Promise<number | null> {
  try {
    return await findLastGoodStep(input.dir);
  } catch (err) {
    if (err instanceof NoCheckpointError) return null;
    throw activityFailure(err);
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
    throw activityFailure(err);
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
    throw activityFailure(err);
  }
}

/**
 * Read a committed checkpoint back and check every file against its manifest (sizes and checksums): the
 * load layer, without keeping the tensors. `ok: false` lists the files that do not match.
 */
export async function verifyCheckpoint(input: { dir: string; step: number }): Promise<VerifyResult> {
  const ctx = Context.current();
  const tick = setInterval(() => ctx.heartbeat({ step: input.step }), 1000);
  try {
    return await verify(input.dir, input.step);
  } catch (err) {
    throw activityFailure(err);
  } finally {
    clearInterval(tick);
  }
}

/**
 * Save committed, verified checkpoints to another store (local ↔ s3://), committed there with the same
 * protocol: every step (or `step`); a step already committed at the destination is skipped.
 */
export async function copyCheckpoints(input: {
  src: string;
  dst: string;
  step?: number;
}): Promise<CopyResult> {
  const ctx = Context.current();
  try {
    return await copy(input.src, input.dst, {
      step: input.step,
      onProgress: (p) => ctx.heartbeat({ step: p.step, file: p.file }),
    });
  } catch (err) {
    throw activityFailure(err);
  }
}

/** Remove the pipeline's claim on its directory (checkpoint/claim.ts) when the pipeline ends. */
export async function releasePipelineClaim(input: { dir: string; workflowId: string }): Promise<boolean> {
  try {
    return await releaseClaim(input.dir, input.workflowId);
  } catch (err) {
    throw activityFailure(err);
  }
}

// What workers register (workers/, the plugin): each activity refuses a location outside the worker's
// allowed roots before it runs (allowed-roots.ts).
/** Activities that need a training slot (model compute). */
export const trainActivities = withAllowedRoots({ trainSegment, trainRank, evaluateCheckpoint });
/** Light activities for the control worker. */
export const controlActivities = withAllowedRoots({
  stepsWithoutEval,
  findLargestModel,
  findLastStep,
  listCheckpoints,
  pruneCheckpoints,
  verifyCheckpoint,
  copyCheckpoints,
  releasePipelineClaim,
});
export type TrainActivities = typeof trainActivities;
export type ControlActivities = typeof controlActivities;

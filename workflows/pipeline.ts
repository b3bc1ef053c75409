/**
 * trainingPipeline: one durable training run of one checkpoint directory. It only orchestrates: find the
 * resume point, run training segments until the target step, evaluate new checkpoints, apply retention.
 * Every fact about progress that matters lives in the store (committed checkpoints) or in this workflow's
 * history, so a dead worker costs only the steps since the last checkpoint, and a dead workflow worker
 * costs nothing. No Node builtins here: the workflow sandbox forbids them; activities are imported as types.
 *
 * Runs in flight replay their history on whichever worker picks them up next, including new code: a change
 * to the commands a run issues (activities, their order, continue-as-new, handlers) must be guarded with
 * `patched()`. test/temporal/replay.test.ts replays recorded histories to catch a change that is not.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  condition,
  ContinueAsNew,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  TemporalFailure,
  workflowInfo,
} from '@temporalio/workflow';
import type { ControlActivities, TrainActivities } from '../activities';
import type {
  EvalSummary,
  PruneSummary,
  RetentionPolicy,
  SegmentResult,
  TrainFlags,
  TrainingSpec,
} from '../activities/types';
import { activityOptions, stickyActivityOptions, type WorkflowSettings } from './options';
import { RankGroup, type GroupState } from './ranks';
import { PipelineVisibility } from './visibility';

/**
 * A pause that arrived while the pipeline looked for its resume point used to leave the state 'starting'
 * for the whole run. The state is in the memo, whose upserts are commands, so runs recorded before the fix
 * keep their 'starting' on replay.
 */
export const PAUSE_WHILE_STARTING_PATCH = 'pipeline-pause-while-starting-v1';

/**
 * A cancelled pipeline (`temporal workflow cancel`, handle.cancel()) used to end with its memo and status
 * still 'running'. It now reads its last checkpoint and shows 'cancelled' before it ends: an activity and
 * upserts that runs cancelled before the fix do not have.
 */
export const CANCELLED_STATE_PATCH = 'pipeline-cancelled-state-v1';

/**
 * A pipeline that failed (a segment's non-retryable error, retries exhausted) used to end with its memo,
 * status and CkptState still 'running'; it now says 'failed' before it ends.
 */
export const FAILED_STATE_PATCH = 'pipeline-failed-state-v1';

/**
 * A run that starts on a directory with checkpoints reads its best metric from their eval results (before,
 * the status showed none until the pipeline evaluated a new checkpoint itself): one more activity at start.
 */
export const BEST_FROM_STORE_PATCH = 'pipeline-best-from-store-v1';

/**
 * A reset (`temporal workflow reset`) replays the history up to its reset point and runs new code from
 * there, so the state it rebuilds is what the pipeline knew at that point: not the checkpoints and eval
 * results the lost part of the history (a segment cut short, evaluations) left in the store. A run that
 * comes from a reset reads them back at its first segment boundary after the reset point: activities only
 * a reset run issues, and only where patched() says so (see resetRun()).
 */
export const RESET_READS_STORE_PATCH = 'pipeline-reset-reads-store-v1';
/**
 * The pipeline removes its claim on the directory (claim.json, made by `ckpt pipeline start`) when it
 * ends (completed, stopped, cancelled or failed; not when it continues as new), so that the next pipeline
 * on the directory needs no --take-over.
 */
export const RELEASE_CLAIM_PATCH = 'pipeline-release-claim-v1';

/**
 * Sticky segments: a segment whose worker kept the run's state in memory names that worker's own task
 * queue in its result, and the next segment is scheduled there first (activities/sticky.ts), then on the
 * shared queue when that worker does not take it in time or the attempt fails.
 */
export const STICKY_SEGMENTS_PATCH = 'pipeline-sticky-segments-v1';

export interface PipelineInput {
  dir: string;
  targetSteps: number;
  segmentSteps: number;
  saveEvery: number;
  /** What to train: the program (a name or an absolute path), its config and the loop's settings. */
  training?: TrainingSpec;
  /** Pipelines started before programs existed carry the GPT's flags instead. */
  flags?: TrainFlags;
  evaluate: boolean;
  /** Metric the pipeline reports as best (from eval results). */
  metric?: { name: string; mode: 'min' | 'max' };
  retention?: RetentionPolicy;
  /** Ranks per segment (default 1); with minWorldSize < worldSize the pipeline may shrink. */
  worldSize?: number;
  minWorldSize?: number;
  /** How long a group may take to assemble before it shrinks (default 60 s). */
  shrinkAfterMs?: number;
  /** Continue-as-new after this many segments in one run (Temporal's own suggestion also triggers it). */
  segmentsPerRun?: number;
  settings: WorkflowSettings;
  /**
   * Search attributes the namespace has registered (of CkptTag, CkptDir, CkptStep, CkptBest, CkptState),
   * found by the client at start: the pipeline upserts CkptStep, CkptBest and CkptState only when they are
   * listed here.
   */
  searchAttributes?: string[];
  /** Carried across continue-as-new. */
  carried?: PipelineState;
}

export type PipelineStateName =
  'starting' | 'running' | 'paused' | 'stopping' | 'completed' | 'stopped' | 'cancelled' | 'failed';

export interface PipelineState {
  state: PipelineStateName;
  step: number;
  targetSteps: number;
  loss: number | null;
  lastCheckpoint: number | null;
  bestMetric: { step: number; value: number } | null;
  segment: number;
  runs: number;
  evals: EvalSummary[];
  pruned: number[];
  retries: number;
  retention?: RetentionPolicy;
  /** Multi-rank pipelines only. */
  group?: GroupState;
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const stopSignal = defineSignal('stop');
export const statusQuery = defineQuery<PipelineState>('status');
export const setTargetUpdate = defineUpdate<PipelineState, [number]>('setTargetSteps');
export const setRetentionUpdate = defineUpdate<PipelineState, [RetentionPolicy | null]>('setRetention');

export async function trainingPipeline(input: PipelineInput): Promise<PipelineState> {
  const train = proxyActivities<TrainActivities>(activityOptions(input.settings, 'train'));
  const evalActs = proxyActivities<TrainActivities>(activityOptions(input.settings, 'eval'));
  const control = proxyActivities<ControlActivities>(activityOptions(input.settings, 'control'));

  const s: PipelineState = input.carried ?? {
    state: 'starting',
    step: 0,
    targetSteps: input.targetSteps,
    loss: null,
    lastCheckpoint: null,
    bestMetric: null,
    segment: 0,
    runs: 0,
    evals: [],
    pruned: [],
    retries: 0,
    retention: input.retention,
  };
  s.runs += 1;
  const visibility = PipelineVisibility.start(input.searchAttributes);
  const worldSize = input.worldSize ?? 1;
  if (worldSize > 1 && !s.group) {
    s.group = {
      worldSize,
      minWorldSize: Math.min(input.minWorldSize ?? worldSize, worldSize),
      generation: 0,
      changes: [],
    };
  }
  const group = s.group ? new RankGroup(s.group, input.settings) : null;
  let paused = s.state === 'paused';
  let stopRequested = false;
  let segmentScope: CancellationScope | null = null;

  // The descriptions show in `temporal workflow metadata` and the Web UI; they add no command to the history.
  setHandler(statusQuery, () => s, {
    description:
      'The pipeline state: step, loss, last checkpoint, best metric, segment, evaluations, pruned steps.',
  });
  setHandler(
    pauseSignal,
    () => {
      paused = true;
      if (s.state === 'running') s.state = 'paused';
    },
    {
      description:
        'Pause after the running segment (it finishes and commits); no segment starts until resume.',
    },
  );
  setHandler(
    resumeSignal,
    () => {
      paused = false;
      if (s.state === 'paused') s.state = 'running';
    },
    { description: 'Resume a paused pipeline.' },
  );
  setHandler(
    stopSignal,
    () => {
      stopRequested = true;
      s.state = 'stopping';
      segmentScope?.cancel();
    },
    { description: 'Stop: cancel the running segment; the pipeline ends on its last committed checkpoint.' },
  );
  setHandler(
    setTargetUpdate,
    (steps) => {
      s.targetSteps = steps;
      return s;
    },
    {
      // A rejected update leaves no trace in the history, so the rules may change without a patch. The
      // failure is typed and non-retryable, as the activities' bad-input failures are: asking again with
      // the same number cannot succeed.
      validator: (steps) => {
        if (!Number.isSafeInteger(steps) || steps < 1) {
          throw ApplicationFailure.nonRetryable(
            `target steps must be a positive integer, got ${steps}`,
            'InvalidArgumentError',
          );
        }
        if (steps < s.step) {
          throw ApplicationFailure.nonRetryable(
            `target steps ${steps} is below the current step ${s.step} of ${input.dir}: checkpoints are never ` +
              'trained backwards; give a target of at least the current step',
            'InvalidArgumentError',
          );
        }
      },
      description:
        'Set the absolute target step (a positive integer, at least the current step); returns the new state.',
    },
  );
  setHandler(
    setRetentionUpdate,
    (policy) => {
      s.retention = policy ?? undefined;
      return s;
    },
    {
      description:
        'Replace the retention policy applied after each segment (null: none); returns the new state.',
    },
  );

  try {
    if (!input.carried) {
      const last = await control.findLastStep({ dir: input.dir });
      s.step = last ?? 0;
      s.lastCheckpoint = last;
      if (last !== null && patched(BEST_FROM_STORE_PATCH)) s.bestMetric = await bestInStore(input, control);
    }
    if (!paused) s.state = 'running';
    // The pause handler turns only 'running' into 'paused'; one that came during the lookup is shown now.
    else if (s.state === 'starting' && patched(PAUSE_WHILE_STARTING_PATCH)) s.state = 'paused';

    let segmentsThisRun = 0;
    let storeReadAfterReset = false;
    // The queue of the worker that keeps this run's state after the last segment, if one does.
    let sticky: string | undefined;
    while (s.step < s.targetSteps && !stopRequested) {
      if (resetRun() && !storeReadAfterReset && patched(RESET_READS_STORE_PATCH)) {
        storeReadAfterReset = true;
        const last = await control.findLastStep({ dir: input.dir });
        s.step = last ?? 0;
        s.lastCheckpoint = last;
        s.bestMetric = await bestInStore(input, control);
        continue;
      }
      // Upserts only what changed since the last call: the start, a pause, a resume.
      visibility.update(s);
      if (paused) {
        await condition(() => !paused || stopRequested);
        continue;
      }
      const toStep = Math.min(s.targetSteps, s.step + input.segmentSteps);
      let result: SegmentResult | null = null;
      try {
        segmentScope = new CancellationScope();
        result = await segmentScope.run(() =>
          group
            ? group.run({
                dir: input.dir,
                fromStep: s.step,
                toStep,
                saveEvery: input.saveEvery,
                training: input.training,
                flags: input.flags,
                settings: input.settings,
                shrinkAfterMs: input.shrinkAfterMs ?? 60_000,
              })
            : stickyOrShared(input, sticky, s, train, {
                dir: input.dir,
                fromStep: s.step,
                toStep,
                saveEvery: input.saveEvery,
                training: input.training,
                flags: input.flags,
              }),
        );
        sticky = result?.stickyQueue;
      } catch (err) {
        if (!(
          stopRequested &&
          (isCancellation(err) || (err instanceof ActivityFailure && isCancellation(err.cause)))
        ))
          throw err;
      } finally {
        segmentScope = null;
      }
      if (!result) {
        // Stopped mid-segment: whatever the segment committed is the last checkpoint.
        s.lastCheckpoint = await control.findLastStep({ dir: input.dir });
        s.step = s.lastCheckpoint ?? s.step;
        break;
      }
      s.segment += 1;
      s.step = result.endStep;
      s.loss = result.finalLoss;
      if (result.saved.length > 0) s.lastCheckpoint = result.saved[result.saved.length - 1]!;
      if (result.attempt > 1) s.retries += result.attempt - 1;

      if (input.evaluate) await evaluateNew(input, evalActs, control, s);
      if (s.retention) {
        const pruned: PruneSummary = await control.pruneCheckpoints({ dir: input.dir, policy: s.retention });
        s.pruned.push(...pruned.deleted);
      }
      visibility.update(s);
      segmentsThisRun += 1;
      const more = s.step < s.targetSteps && !stopRequested;
      if (
        more &&
        (workflowInfo().continueAsNewSuggested || segmentsThisRun >= (input.segmentsPerRun ?? 100))
      ) {
        await continueAsNew<typeof trainingPipeline>({ ...input, carried: s });
      }
    }
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    await releaseClaim(input, control);
    // Cancelled (`temporal workflow cancel`): the segment has stopped (the activities wait for their
    // cancellation to complete); show where the directory is and why the run ended, then end cancelled.
    if (
      isCancellation(err) &&
      CancellationScope.current().consideredCancelled &&
      patched(CANCELLED_STATE_PATCH)
    ) {
      await CancellationScope.nonCancellable(async () => {
        s.lastCheckpoint = await control.findLastStep({ dir: input.dir });
        s.step = s.lastCheckpoint ?? s.step;
      });
      s.state = 'cancelled';
      visibility.update(s);
    } else if (err instanceof TemporalFailure && !isCancellation(err) && patched(FAILED_STATE_PATCH)) {
      // What fails the workflow (not a bug in it, which fails only the task and is retried).
      s.state = 'failed';
      visibility.update(s);
    }
    throw err;
  }
  await releaseClaim(input, control);
  s.state = stopRequested ? 'stopped' : 'completed';
  visibility.update(s);
  return s;
}

/**
 * One segment, first on the worker that keeps the run's state (`sticky`), once; then, if that worker does
 * not take it in time or its attempt fails (a worker killed mid-segment), on the shared queue with the
 * usual retries. A cancellation, or a failure no retry can fix, ends it as on the shared queue.
 */
async function stickyOrShared(
  input: PipelineInput,
  sticky: string | undefined,
  s: PipelineState,
  train: TrainActivities,
  segment: Parameters<TrainActivities['trainSegment']>[0],
): Promise<SegmentResult> {
  if (sticky !== undefined && patched(STICKY_SEGMENTS_PATCH)) {
    const onWorker = proxyActivities<TrainActivities>(stickyActivityOptions(input.settings, sticky));
    try {
      return await onWorker.trainSegment(segment);
    } catch (err) {
      const cause = err instanceof ActivityFailure ? err.cause : err;
      if (isCancellation(err) || isCancellation(cause)) throw err;
      if (
        cause instanceof ApplicationFailure &&
        (cause.nonRetryable || input.settings.nonRetryableErrorTypes.includes(cause.type ?? ''))
      )
        throw err;
      // Not taken in time is no failure; an attempt that failed counts as the retry it is.
      const notTaken = cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START';
      if (!notTaken) s.retries += 1;
    }
  }
  return train.trainSegment(segment);
}

/** Best effort: a claim left behind only makes the next start on the directory ask for --take-over. */
async function releaseClaim(
  input: PipelineInput,
  control: ReturnType<typeof proxyActivities<ControlActivities>>,
): Promise<void> {
  if (!patched(RELEASE_CLAIM_PATCH)) return;
  await CancellationScope.nonCancellable(() =>
    control.releasePipelineClaim({ dir: input.dir, workflowId: workflowInfo().workflowId }),
  ).catch(() => undefined);
}

/**
 * Whether this run was made by a reset: a reset gives the run a new run id but keeps the original one of
 * the execution it reset (continue-as-new starts a new execution, with its own).
 */
function resetRun(): boolean {
  const info = workflowInfo();
  return info.runId !== info.originalExecutionRunId;
}

/** The metric the pipeline calls best: the one it names, else the program's primary metric of `result`. */
function metricOf(input: PipelineInput, result?: EvalSummary): { name: string; mode: 'min' | 'max' } {
  return input.metric ?? result?.metric ?? { name: 'val_bpb', mode: 'min' };
}

function isBetter(value: number, best: { value: number } | null, mode: 'min' | 'max'): boolean {
  return best === null || (mode === 'min' ? value < best.value : value > best.value);
}

/**
 * The best metric among the eval results in the store (of committed checkpoints). Results say their
 * metric's name but not whether lower is better, so the pipeline's metric decides (the GPT's val_bpb when
 * it names none).
 */
async function bestInStore(
  input: PipelineInput,
  control: ControlActivities,
): Promise<{ step: number; value: number } | null> {
  const metric = metricOf(input);
  let best: { step: number; value: number } | null = null;
  for (const checkpoint of await control.listCheckpoints({ dir: input.dir })) {
    const value = checkpoint.metrics?.[metric.name];
    if (checkpoint.committed && typeof value === 'number' && isBetter(value, best, metric.mode))
      best = { step: checkpoint.step, value };
  }
  return best;
}

async function evaluateNew(
  input: PipelineInput,
  evalActs: TrainActivities,
  control: ControlActivities,
  s: PipelineState,
): Promise<void> {
  for (const step of await control.stepsWithoutEval({ dir: input.dir })) {
    const result = await evalActs.evaluateCheckpoint({
      dir: input.dir,
      step,
      program: input.training?.program,
      data: input.flags?.data,
      // A command program's evaluation command (an activity input: replays of older runs are unaffected).
      ...(input.training?.exec ? { exec: input.training.exec } : {}),
    });
    s.evals.push(result);
    // The program's primary metric unless the pipeline names one; results recorded before programs existed
    // had the GPT's metrics at the top level.
    const metric = metricOf(input, result);
    const value = result.metrics?.[metric.name] ?? (result as unknown as Record<string, number>)[metric.name];
    if (typeof value !== 'number') continue;
    if (isBetter(value, s.bestMetric, metric.mode)) s.bestMetric = { step, value };
  }
  // Keep the carried state small: the last evaluations are enough for status; the files hold them all.
  if (s.evals.length > 50) s.evals.splice(0, s.evals.length - 50);
}

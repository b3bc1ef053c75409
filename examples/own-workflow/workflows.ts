/**
 * A workflow of your own built from the package's activities: find the largest model, verify and
 * evaluate its last committed step, save a copy of it to a release location when one is given, then apply
 * retention to that tag. The activities are the ones the pipeline uses
 * (registered on your Worker by `trainingPlugin`); this file imports their types only, as every workflow
 * file must (the workflow sandbox has no Node builtins). README.md shows the Worker and how to start it.
 */
import { ApplicationFailure, proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type {
  ControlActivities,
  EvalSummary,
  RetentionPolicy,
  TrainActivities,
} from 'temporal-ckpt/activities';

export interface EvaluateLatestInput {
  /** The folder that holds one folder per tag: e.g. /data/ckpt/base_checkpoints or s3://bucket/ckpt/base_checkpoints. */
  checkpointsDir: string;
  /** What to keep of that tag afterwards; the step just evaluated is always kept. */
  keep: RetentionPolicy;
  /** The program that wrote the checkpoints when it is not built in: a name registered on the worker. */
  program?: string;
  /** Task queue of the evaluation (a worker with role 'train', e.g. on a GPU host); default: this workflow's. */
  evalTaskQueue?: string;
  /** Also save the evaluated step here (another directory or s3:// location), committed as a checkpoint. */
  releaseDir?: string;
}

export interface EvaluateLatestResult {
  tag: string;
  step: number;
  metrics: EvalSummary['metrics'];
  metric: EvalSummary['metric'];
  /** Bytes copied to releaseDir (0 without one, or when it already had the step). */
  releasedBytes: number;
  /** Steps retention deleted. */
  deleted: number[];
  /** Committed steps of the tag afterwards. */
  remaining: number[];
}

export async function evaluateLatestThenPrune(input: EvaluateLatestInput): Promise<EvaluateLatestResult> {
  // Listing and pruning touch only the store: short timeouts, a few retries.
  const light = proxyActivities<ControlActivities>({
    startToCloseTimeout: '5 minutes',
    retry: { maximumAttempts: 5 },
  });
  // An evaluation loads the model in a child process and heartbeats while it runs, so a dead worker is
  // noticed at the heartbeat timeout rather than at the end of the start-to-close one.
  const evaluation: ActivityOptions = {
    startToCloseTimeout: '1 hour',
    heartbeatTimeout: '30 seconds',
    retry: { maximumAttempts: 3 },
    ...(input.evalTaskQueue ? { taskQueue: input.evalTaskQueue } : {}),
  };
  const compute = proxyActivities<TrainActivities>(evaluation);

  const tag = await light.findLargestModel({ checkpointsDir: input.checkpointsDir });
  if (tag === null) {
    throw ApplicationFailure.nonRetryable(
      `no committed checkpoints under ${input.checkpointsDir}`,
      'NoCheckpoint',
    );
  }
  // Plain string joining: the sandbox has no node:path, and the same works for s3:// locations.
  const dir = `${input.checkpointsDir.replace(/\/+$/, '')}/${tag}`;
  const step = await light.findLastStep({ dir });
  if (step === null)
    throw ApplicationFailure.nonRetryable(`${dir} has no verified checkpoint`, 'NoCheckpoint');

  // Read every byte back against the manifest before spending an evaluation on it.
  const verified = await light.verifyCheckpoint({ dir, step });
  if (!verified.ok) {
    throw ApplicationFailure.nonRetryable(
      `step ${step} of ${dir} does not verify: ${verified.problems.map((p) => p.message).join('; ')}`,
      'IntegrityError',
    );
  }
  const result = await compute.evaluateCheckpoint({ dir, step, program: input.program });
  const released = input.releaseDir
    ? await light.copyCheckpoints({ src: dir, dst: input.releaseDir, step })
    : { copied: [] };

  const policy: RetentionPolicy = { ...input.keep, pinned: [...(input.keep.pinned ?? []), step] };
  const pruned = await light.pruneCheckpoints({ dir, policy });
  const remaining = (await light.listCheckpoints({ dir })).filter((c) => c.committed).map((c) => c.step);
  return {
    tag,
    step,
    metrics: result.metrics,
    metric: result.metric,
    releasedBytes: released.copied.reduce((sum, c) => sum + c.bytes, 0),
    deleted: pruned.deleted,
    remaining,
  };
}

/** Activity options from the settings the client passed in (workflows cannot read temporal.config.ts). */
import type { ActivityOptions } from '@temporalio/workflow';

export interface WorkflowSettings {
  taskQueues: { train: string; control: string };
  activities: {
    heartbeatTimeoutMs: number;
    segmentTimeoutMs: number;
    lightTimeoutMs: number;
    maximumAttempts: number;
    initialRetryMs: number;
    maximumRetryMs: number;
  };
  nonRetryableErrorTypes: string[];
}

/** Each retry waits this many times as long as the one before, up to maximumRetryMs. */
const BACKOFF_COEFFICIENT = 2;

/**
 * The wait before retry number `retry` (1: the first) as Temporal computes it for an activity, for the
 * retries a workflow makes itself (a rank group, ranks.ts), so both back off alike.
 */
export function retryDelayMs(activities: WorkflowSettings['activities'], retry: number): number {
  return Math.min(activities.initialRetryMs * BACKOFF_COEFFICIENT ** (retry - 1), activities.maximumRetryMs);
}

export function activityOptions(
  settings: WorkflowSettings,
  kind: 'train' | 'eval' | 'control',
): ActivityOptions {
  const a = settings.activities;
  const retry = {
    maximumAttempts: a.maximumAttempts,
    initialInterval: a.initialRetryMs,
    maximumInterval: a.maximumRetryMs,
    backoffCoefficient: BACKOFF_COEFFICIENT,
    nonRetryableErrorTypes: settings.nonRetryableErrorTypes,
  };
  if (kind === 'control') {
    return { taskQueue: settings.taskQueues.control, startToCloseTimeout: a.lightTimeoutMs, retry };
  }
  return {
    taskQueue: settings.taskQueues.train,
    startToCloseTimeout: kind === 'train' ? a.segmentTimeoutMs : a.lightTimeoutMs,
    heartbeatTimeout: a.heartbeatTimeoutMs,
    cancellationType: 'WAIT_CANCELLATION_COMPLETED' as ActivityOptions['cancellationType'],
    retry,
  };
}

/**
 * How long a segment waits on the worker-specific queue of the worker that keeps its run's state
 * (sticky segments) before the pipeline gives up on it and schedules the segment on the shared queue.
 */
export const STICKY_SCHEDULE_TO_START_MS = 5_000;

/**
 * A segment on a worker's own queue: one attempt only (a dead worker's queue has nobody to retry it);
 * any failure but a non-retryable one sends the segment back to the shared queue, with its retries.
 */
export function stickyActivityOptions(settings: WorkflowSettings, queue: string): ActivityOptions {
  return {
    ...activityOptions(settings, 'train'),
    taskQueue: queue,
    scheduleToStartTimeout: STICKY_SCHEDULE_TO_START_MS,
    retry: { ...activityOptions(settings, 'train').retry, maximumAttempts: 1 },
  };
}

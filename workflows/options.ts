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

export function activityOptions(
  settings: WorkflowSettings,
  kind: 'train' | 'eval' | 'control',
): ActivityOptions {
  const a = settings.activities;
  const retry = {
    maximumAttempts: a.maximumAttempts,
    initialInterval: a.initialRetryMs,
    maximumInterval: a.maximumRetryMs,
    backoffCoefficient: 2,
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

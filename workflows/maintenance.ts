/**
 * Workflows that schedules start: evaluate every committed checkpoint that has no eval result yet, and
 * apply a retention policy to a checkpoint directory.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { ControlActivities, TrainActivities } from '../activities';
import type { EvalSummary, PruneSummary, RetentionPolicy } from '../activities/types';
import { activityOptions, type WorkflowSettings } from './options';

export interface EvaluateNewInput {
  dir: string;
  /** The program that wrote the checkpoints (default: the built-in one their meta names). */
  program?: string;
  data?: string;
  settings: WorkflowSettings;
}

export async function evaluateNewCheckpoints(input: EvaluateNewInput): Promise<EvalSummary[]> {
  const control = proxyActivities<ControlActivities>(activityOptions(input.settings, 'control'));
  const train = proxyActivities<TrainActivities>(activityOptions(input.settings, 'eval'));
  const results: EvalSummary[] = [];
  for (const step of await control.stepsWithoutEval({ dir: input.dir })) {
    results.push(
      await train.evaluateCheckpoint({ dir: input.dir, step, program: input.program, data: input.data }),
    );
  }
  return results;
}

export interface ApplyRetentionInput {
  dir: string;
  policy: RetentionPolicy;
  dryRun?: boolean;
  settings: WorkflowSettings;
}

export async function applyRetention(input: ApplyRetentionInput): Promise<PruneSummary> {
  const control = proxyActivities<ControlActivities>(activityOptions(input.settings, 'control'));
  return control.pruneCheckpoints({ dir: input.dir, policy: input.policy, dryRun: input.dryRun });
}

/** A Temporal client from the typed settings, and the workflow settings the client hands to workflows. */
import { NON_RETRYABLE_ERRORS, type TemporalSettings } from '../temporal.config';
import type { WorkflowSettings } from '../workflows/options';

export { connectClient } from '../activities/client';

export function workflowSettings(settings: TemporalSettings): WorkflowSettings {
  return {
    taskQueues: settings.taskQueues,
    activities: settings.activities,
    nonRetryableErrorTypes: NON_RETRYABLE_ERRORS,
  };
}

export function uiLink(settings: TemporalSettings, workflowId: string): string {
  return `${settings.uiAddress}/namespaces/${encodeURIComponent(settings.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}

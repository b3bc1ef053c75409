/** A Temporal client from the typed settings, and the workflow settings the client hands to workflows. */
import { Client, Connection } from '@temporalio/client';
import { NON_RETRYABLE_ERRORS, type TemporalSettings } from '../temporal.config';
import type { WorkflowSettings } from '../workflows/options';

export async function connectClient(settings: TemporalSettings): Promise<Client> {
  const { address, tls, apiKey, metadata } = settings.connect.connectionOptions as {
    address?: string;
    tls?: Parameters<typeof Connection.connect>[0] extends infer O ? (O extends { tls?: infer T } ? T : never) : never;
    apiKey?: string;
    metadata?: Record<string, string>;
  };
  const connection = await Connection.connect({ address, tls, apiKey, metadata, connectTimeout: 10_000 });
  return new Client({ connection, namespace: settings.namespace });
}

export function workflowSettings(settings: TemporalSettings): WorkflowSettings {
  return { taskQueues: settings.taskQueues, activities: settings.activities, nonRetryableErrorTypes: NON_RETRYABLE_ERRORS };
}

export function uiLink(settings: TemporalSettings, workflowId: string): string {
  return `${settings.uiAddress}/namespaces/${encodeURIComponent(settings.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}

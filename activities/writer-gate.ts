/**
 * The pipeline side of the writer lease (checkpoint/writer.ts). A training child renews its lease only as
 * far as its worker last heard from the Temporal server that the child's activity attempt is the current
 * one: a worker cut off from the server, or whose attempt was cancelled, timed out or retried elsewhere,
 * stops confirming, and its child's lease runs out within one TTL even if the store is still reachable.
 */
import { Context } from '@temporalio/activity';
import { decodePendingActivityState, type Client } from '@temporalio/client';
import { writerTtlMs } from '../checkpoint/writer';
import { WRITER_CONFIRMED, type TrainRequest } from '../train/request';

/** The activity's client, or undefined where there is none (a mock activity environment). */
function activityClient(ctx: Context): Client | undefined {
  try {
    return ctx.client;
  } catch {
    return undefined;
  }
}

/** How a segment's rank 0 takes the lease: for this pipeline, over its own earlier attempts. */
export function writerSettings(ctx: Context): NonNullable<TrainRequest['writer']> {
  const workflowId = ctx.info.workflowExecution?.workflowId;
  return {
    claim: workflowId ?? null,
    takeOver: workflowId ? 'same-claim' : 'never',
    gated: workflowId !== undefined && activityClient(ctx) !== undefined,
  };
}

/** Whether the server still runs this very attempt of the activity (not cancelled, not retried). */
export async function attemptIsCurrent(client: Client, info: Context['info']): Promise<boolean> {
  const execution = info.workflowExecution;
  if (!execution) return false;
  const described = await client.workflowService.describeWorkflowExecution({
    namespace: info.workflowNamespace,
    execution: { workflowId: execution.workflowId, runId: execution.runId },
  });
  const pending = described.pendingActivities?.find((a) => a.activityId === info.activityId);
  return (
    pending !== undefined &&
    pending.attempt === info.attempt &&
    decodePendingActivityState(pending.state) !== 'CANCEL_REQUESTED'
  );
}

/**
 * Confirm the attempt every quarter of the lease TTL and tell the child (`send`) each time the server
 * did. Returns the function that stops it.
 */
export function confirmAttempt(ctx: Context, send: (message: unknown) => void): () => void {
  const client = activityClient(ctx);
  if (!client || !ctx.info.workflowExecution) return () => undefined;
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    const at = Date.now();
    try {
      if (await attemptIsCurrent(client, ctx.info)) send({ type: WRITER_CONFIRMED, at });
    } catch {
      // Not confirmed: the child's lease runs on what it has, and out if this goes on.
    } finally {
      busy = false;
    }
  };
  void tick();
  const timer = setInterval(() => void tick(), Math.max(250, Math.floor(writerTtlMs() / 4)));
  return () => clearInterval(timer);
}

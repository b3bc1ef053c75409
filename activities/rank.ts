/**
 * One rank of a multi-rank training segment. The ranks of one attempt find each other through their
 * pipeline: each rank joins the workflow's rendezvous (an update tagged with the attempt's generation) and
 * the update answers once all W have joined, with rank 0's address. A retried attempt has a new generation,
 * so it never talks to a stale peer. Then the rank trains in a child process (RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT), heartbeating {step, loss}; if any rank fails the workflow stops the whole
 * attempt and retries it as a group from the last checkpoint.
 */
import { activityInfo, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { freePort } from '../infra/temporal';
import { loadConfig } from '../temporal.config';
import { HEARTBEAT_TICK_MS, runCkpt, segmentResult } from './child';
import { withGpuSlot } from './gpus';
import { connectClient } from './client';
import { childFailure } from './failure';
import { emitSegmentDone, forwardTrainingEvent } from './observe';
import { trainingOf, trainRequest } from './training';
import type { DoneEvent } from '../train/events';
import { childKillGrace, commandForChild, programForChild } from './programs';
import { confirmAttempt, writerSettings } from './writer-gate';
import type { JoinRequest, RankSegmentInput, Rendezvous, SegmentProgress, SegmentResult } from './types';

let client: Promise<Client> | null = null;

export async function trainRank(input: RankSegmentInput): Promise<SegmentResult> {
  const ctx = Context.current();
  let progress: SegmentProgress = { step: -1, loss: null };
  const tick = setInterval(
    () => ctx.heartbeat({ ...progress, rank: input.rank, generation: input.generation }),
    HEARTBEAT_TICK_MS,
  );
  try {
    const config = loadConfig();
    // Where the other ranks reach rank 0: this host's address as the other workers see it.
    const host = process.env.CKPT_ADVERTISE_ADDR ?? '127.0.0.1';
    const address = input.rank === 0 ? `${host}:${await freePort()}` : null;
    client ??= connectClient(config.temporal);
    const handle = (await client).workflow.getHandle(input.workflowId);
    const rendezvous = await Promise.race([
      handle.executeUpdate<Rendezvous, [JoinRequest]>('joinRendezvous', {
        args: [{ generation: input.generation, rank: input.rank, address }],
      }),
      new Promise<never>((_, reject) =>
        ctx.cancellationSignal.addEventListener('abort', () => reject(ctx.cancellationSignal.reason), {
          once: true,
        }),
      ),
    ]);
    const [masterAddr, masterPort] = rendezvous.master.split(':') as [string, string];
    let done: DoneEvent | undefined;
    const training = trainingOf(input);
    const program = commandForChild(training.program, training.exec) ?? programForChild(training.program);
    const result = await withGpuSlot((gpu) =>
      runCkpt(['train', '--from-ipc', '--progress-json'], {
        killGraceMs: childKillGrace(program),
        env: {
          ...gpu,
          LOCAL_RANK: process.env.LOCAL_RANK ?? '0',
          RANK: String(input.rank),
          WORLD_SIZE: String(input.worldSize),
          MASTER_ADDR: masterAddr,
          MASTER_PORT: masterPort,
        },
        request: {
          ...trainRequest(input, program, { reshard: true }),
          writer: writerSettings(ctx),
        },
        onStart: (send) => confirmAttempt(ctx, send),
        signal: ctx.cancellationSignal,
        onEvent: (event) => {
          forwardTrainingEvent(input.dir, event, input.rank);
          if (event.type === 'progress') progress = { step: event.step, loss: event.loss };
          if (event.type === 'done') done = event;
        },
      }),
    );
    if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason ?? new Error('cancelled');
    if (result.code !== 0 || !done)
      throw childFailure(`rank ${input.rank}/${input.worldSize} (generation ${input.generation})`, result);
    emitSegmentDone(input.dir, done, input.rank);
    return segmentResult(done, activityInfo().attempt);
  } finally {
    clearInterval(tick);
  }
}

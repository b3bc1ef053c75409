/**
 * Group retries of a multi-rank segment (workflows/ranks.ts) follow the pipeline's retry settings like an
 * activity's retries: waits from initialRetryMs, doubling, up to maximumRetryMs; and a rank failure that
 * retrying cannot fix ends the pipeline at once. The workflow runs for real on the dev server, in a worker
 * in this process whose activities are stand-ins (no training): the rank activities fail on cue.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { optionalTsToMs } from '@temporalio/common/lib/time';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { RankSegmentInput, SegmentResult } from '../../activities/types';
import type { PipelineInput } from '../../workflows/pipeline';
import { GROUP_NON_RETRYABLE_PATCH } from '../../workflows/ranks';
import { temporalEnv, type TemporalTestEnv } from '../helpers/temporal';

const T = temporalEnv('group-retry');
let env: TemporalTestEnv;
let connection: NativeConnection;
let worker: Worker;
let running: Promise<void>;
const queue = `group-retry-${randomBytes(3).toString('hex')}`;
/** How each generation's ranks end, by workflow id. */
const scripts = new Map<string, (generation: number) => void>();
const SHRINK_AFTER_MS = 50;
const RETRY = { maximumAttempts: 4, initialRetryMs: 300, maximumRetryMs: 1000 };

const done: SegmentResult = {
  startStep: 0,
  endStep: 10,
  saved: [10],
  finalLoss: 1,
  backend: 'stand-in',
  seconds: 0,
  attempt: 1,
};

before(async () => {
  env = await T.start();
  connection = await NativeConnection.connect({ address: env.address });
  worker = await Worker.create({
    connection,
    taskQueue: queue,
    workflowsPath: require.resolve('../../workflows'),
    activities: {
      findLastStep: async () => null,
      // The ranks never join the rendezvous: with minWorldSize = worldSize the group waits
      // SHRINK_AFTER_MS for them, then takes the ranks' outcome.
      trainRank: async (input: RankSegmentInput) => {
        scripts.get(input.workflowId)!(input.generation);
        return done;
      },
    },
  });
  running = worker.run();
});

after(async () => {
  worker?.shutdown();
  await running;
  await connection?.close();
});

async function runPipeline(id: string, script: (generation: number) => void) {
  scripts.set(id, script);
  const input: PipelineInput = {
    dir: 'unused',
    targetSteps: 10,
    segmentSteps: 10,
    saveEvery: 10,
    flags: {},
    evaluate: false,
    worldSize: 2,
    minWorldSize: 2,
    shrinkAfterMs: SHRINK_AFTER_MS,
    settings: {
      ...env.settings,
      taskQueues: { train: queue, control: queue },
      activities: { ...env.settings.activities, ...RETRY },
    },
  };
  const handle = await env.client.workflow.start('trainingPipeline', {
    workflowId: id,
    taskQueue: queue,
    args: [input],
  });
  const outcome = await handle.result().then(
    () => null,
    (err: unknown) => err,
  );
  const events = (await handle.fetchHistory()).events ?? [];
  const waits = events
    .map((e) => optionalTsToMs(e.timerStartedEventAttributes?.startToFireTimeout))
    .filter((ms): ms is number => ms !== undefined && ms !== SHRINK_AFTER_MS);
  const rankAttempts = events.filter(
    (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'trainRank',
  ).length;
  const markers = events
    .map((e) => e.markerRecordedEventAttributes?.details?.['patch-data']?.payloads?.[0]?.data)
    .filter((d): d is Uint8Array => d !== undefined && d !== null)
    .map((d) => Buffer.from(d).toString());
  return { outcome, waits, rankAttempts, markers };
}

describe('a multi-rank segment retried as a group', () => {
  it('waits as activity retries do: initial interval, doubling, capped at the maximum', async () => {
    const r = await runPipeline(`group-backoff-${randomBytes(3).toString('hex')}`, (generation) => {
      if (generation < 4) throw ApplicationFailure.retryable('rank 1 is gone', 'PeerLostError');
    });
    assert.equal(r.outcome, null, `the pipeline completed: ${String(r.outcome)}`);
    assert.deepEqual(r.waits, [300, 600, 1000]);
    assert.equal(r.rankAttempts, 4 * 2);
  });

  it('ends at once on a failure that retrying cannot fix (non-retryable, or of a non-retryable type)', async () => {
    for (const failure of [
      () => ApplicationFailure.nonRetryable('manifest_000010.json: not valid JSON', 'SchemaError'),
      () => ApplicationFailure.retryable('manifest_000010.json: not valid JSON', 'SchemaError'),
    ]) {
      const r = await runPipeline(`group-fatal-${randomBytes(3).toString('hex')}`, () => {
        throw failure();
      });
      assert.ok(r.outcome instanceof WorkflowFailedError, String(r.outcome));
      let cause: unknown = r.outcome;
      while (cause instanceof Error && !(cause instanceof ApplicationFailure)) cause = cause.cause;
      assert.ok(cause instanceof ApplicationFailure, 'an application failure in the chain');
      assert.equal(cause.type, 'SchemaError');
      assert.deepEqual(r.waits, [], 'no backoff before failing');
      assert.equal(r.rankAttempts, 2, 'one generation only');
      assert.ok(
        r.markers.some((m) => m.includes(GROUP_NON_RETRYABLE_PATCH)),
        `the patch marker is recorded: ${r.markers.join(', ')}`,
      );
    }
  });
});

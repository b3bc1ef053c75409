/**
 * Multi-rank segments (workflows/ranks.ts) with mocked rank activities: the ranks of a generation meet at
 * the workflow's rendezvous (a real update from the mock, as activities/rank.ts sends it), a failed rank
 * makes the whole group retry with a new generation, a group that cannot assemble shrinks down to its
 * minimum world size, and a stop cancels every rank.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { RankSegmentInput, Rendezvous, SegmentResult } from '../../activities/types';
import { stopSignal, trainingPipeline, type PipelineInput } from '../../workflows/pipeline';
import { joinRendezvousUpdate } from '../../workflows/ranks';
import {
  FakeStore,
  gate,
  heartbeatWhile,
  mockedWorkflows,
  SUITE,
  type MockedWorkflowEnv,
  type MockRun,
  type Mocks,
} from '../helpers/mock-workflows';
import { sleep, waitFor } from '../helpers/temporal';

const T = mockedWorkflows('ranks');
let env: MockedWorkflowEnv;
before(async () => {
  env = await T.start();
});

type Run = MockRun<typeof trainingPipeline>;

function input(overrides: Partial<PipelineInput> = {}): PipelineInput {
  return {
    dir: '/ckpt/base_checkpoints/d1',
    targetSteps: 10,
    segmentSteps: 10,
    saveEvery: 5,
    flags: {},
    evaluate: false,
    worldSize: 2,
    settings: env.settings,
    ...overrides,
  };
}

const tag = (r: RankSegmentInput) => `g${r.generation} rank ${r.rank}`;
const masterOf = (generation: number) => `10.0.0.${generation}:29500`;

interface RankBehaviour {
  /** Before joining the rendezvous (fail here: a rank that never got going). */
  beforeJoin?(r: RankSegmentInput): Promise<void>;
  /** After the group assembled, before training (fail here: a rank that died mid-segment). */
  afterJoin?(r: RankSegmentInput): Promise<void>;
  /** After the rank was cancelled or failed, before its activity ends (a child slow to stop). */
  onEnd?(r: RankSegmentInput): Promise<void>;
}

/**
 * trainRank as activities/rank.ts behaves, minus the training: join the rendezvous with this rank's
 * generation (rank 0 gives its address), then train; rank 0 commits, as in a real group. The log gets
 * "gN rank R joined", and "cancelled" / "failed" and "ended" when an attempt goes wrong.
 */
function rankActivities(run: Run, store: FakeStore, behaviour: RankBehaviour = {}): Mocks {
  return {
    findLastStep: async () => store.last(),
    listCheckpoints: async () => store.list(),
    trainRank: async (r): Promise<SegmentResult> => {
      try {
        await behaviour.beforeJoin?.(r);
        const rendezvous: Rendezvous = await heartbeatWhile(
          env.client.workflow.getHandle(r.workflowId).executeUpdate(joinRendezvousUpdate, {
            args: [
              {
                generation: r.generation,
                rank: r.rank,
                address: r.rank === 0 ? masterOf(r.generation) : null,
              },
            ],
          }),
        );
        assert.deepEqual(rendezvous, {
          generation: r.generation,
          worldSize: r.worldSize,
          master: masterOf(r.generation),
        });
        run.note(`${tag(r)} joined`);
        await behaviour.afterJoin?.(r);
        if (r.rank === 0) return store.train(r);
        return {
          startStep: r.fromStep ?? 0,
          endStep: r.toStep,
          saved: [],
          finalLoss: null,
          backend: 'mock',
          seconds: 0,
          attempt: 1,
        };
      } catch (err) {
        run.note(`${tag(r)} ${err instanceof CancelledFailure ? 'cancelled' : 'failed'}`);
        await behaviour.onEnd?.(r);
        run.note(`${tag(r)} ended`);
        throw err;
      }
    },
  };
}

const forever = () => heartbeatWhile(new Promise<never>(() => undefined));
const rankCalls = (run: Run) => run.callsOf('trainRank').map((c) => c.input as RankSegmentInput);

describe('a multi-rank segment', SUITE, () => {
  it('runs worldSize rank activities that meet at the rendezvous; each segment is a new generation', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input({ worldSize: 3, targetSteps: 20 })], (run) =>
      rankActivities(run, store),
    );
    const s = await run.handle.result();
    const calls = rankCalls(run);
    assert.deepEqual(calls.map((r) => [r.generation, r.rank, r.worldSize, r.toStep, r.workflowId]).sort(), [
      [1, 0, 3, 10, run.id],
      [1, 1, 3, 10, run.id],
      [1, 2, 3, 10, run.id],
      [2, 0, 3, 20, run.id],
      [2, 1, 3, 20, run.id],
      [2, 2, 3, 20, run.id],
    ]);
    assert.ok(run.callsOf('trainRank').every((c) => c.taskQueue === env.settings.taskQueues.train));
    assert.equal(run.callsOf('trainSegment').length, 0);
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 20);
    assert.equal(s.lastCheckpoint, 20);
    assert.deepEqual(s.group, { worldSize: 3, minWorldSize: 3, generation: 2, changes: [] });
  });

  it('the rendezvous refuses a stale generation, a rank outside the world size, and rank 0 without an address', async () => {
    const store = new FakeStore();
    const joinNow = gate();
    const run = await env.start(trainingPipeline, [input()], (run) =>
      rankActivities(run, store, { beforeJoin: () => heartbeatWhile(joinNow.promise) }),
    );
    await run.called('trainRank', 2);
    const handle = env.client.workflow.getHandle(run.id);
    for (const [request, message] of [
      [{ generation: 0, rank: 1, address: null }, 'stale rendezvous: generation 0, current 1'],
      [{ generation: 1, rank: 2, address: null }, 'rank 2 is outside world size 2'],
      [{ generation: 1, rank: 0, address: null }, 'rank 0 must give its address'],
    ] as const) {
      await assert.rejects(
        handle.executeUpdate(joinRendezvousUpdate, { args: [request] }),
        (err: unknown) => err instanceof WorkflowUpdateFailedError && err.cause?.message === message,
      );
    }
    joinNow.open();
    assert.equal((await run.handle.result()).state, 'completed');
  });
});

describe('group retry', SUITE, () => {
  const rankOneFailsInGeneration1: RankBehaviour = {
    afterJoin: async (r) => {
      if (r.generation === 1 && r.rank === 1)
        throw ApplicationFailure.retryable('NCCL timeout', 'ChildProcessError');
      if (r.generation === 1) await forever();
    },
  };

  it('a failed rank cancels the others; the group retries with a new generation from the last checkpoint', async () => {
    const store = new FakeStore([5]);
    const run = await env.start(trainingPipeline, [input()], (run) =>
      rankActivities(run, store, rankOneFailsInGeneration1),
    );
    const s = await run.handle.result();
    assert.ok(run.log.includes('g1 rank 1 failed'));
    assert.ok(run.log.includes('g1 rank 0 cancelled'), run.log.join(', '));
    assert.deepEqual(
      rankCalls(run)
        .map((r) => [r.generation, r.rank, r.worldSize])
        .sort(),
      [
        [1, 0, 2],
        [1, 1, 2],
        [2, 0, 2],
        [2, 1, 2],
      ],
    );
    assert.ok(
      run.callsOf('trainRank').every((c) => c.attempt === 1),
      'a rank is never retried alone',
    );
    assert.equal(s.state, 'completed');
    assert.equal(s.retries, 1);
    assert.equal(s.step, 10);
    assert.equal(s.group?.generation, 2);
  });

  it('the next generation starts only after every rank of the failed one has ended', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input()], (run) =>
      // Rank 0 takes longer to stop than the retry backoff and the start of the next generation take.
      rankActivities(run, store, { ...rankOneFailsInGeneration1, onEnd: () => sleep(2500) }),
    );
    await run.handle.result();
    // The third trainRank call is the first of generation 2.
    const rankCallsAt = run.log.flatMap((e, i) => (e === 'trainRank' ? [i] : []));
    const ended = run.log.indexOf('g1 rank 0 ended');
    assert.ok(ended >= 0 && ended < rankCallsAt[2]!, run.log.join(', '));
  });

  it('after maximumAttempts failed attempts the group fails the pipeline with the rank failure', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input()], (run) =>
      rankActivities(run, store, {
        afterJoin: async (r) => {
          if (r.rank === 1) throw ApplicationFailure.retryable('rank 1 out of memory', 'ChildProcessError');
          await forever();
        },
      }),
    );
    const err = await run.handle.result().catch((e: unknown) => e);
    assert.ok(err instanceof WorkflowFailedError, String(err));
    assert.ok(
      err.cause instanceof ActivityFailure && err.cause.cause instanceof ApplicationFailure,
      String(err.cause),
    );
    assert.equal(err.cause.activityType, 'trainRank');
    assert.equal(err.cause.cause.message, 'rank 1 out of memory');
    assert.deepEqual([...new Set(rankCalls(run).map((r) => r.generation))], [1, 2, 3]);
  });

  it('a rank that fails before the group assembles makes the group retry at once, at the same world size', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ minWorldSize: 1, shrinkAfterMs: 10_000 })],
      (run) =>
        rankActivities(run, store, {
          beforeJoin: async (r) => {
            if (r.generation === 1 && r.rank === 1)
              throw ApplicationFailure.retryable('cannot reach the rendezvous', 'ChildProcessError');
          },
        }),
    );
    try {
      await waitFor('the second generation', () => rankCalls(run).find((r) => r.generation === 2), {
        timeoutMs: 3000,
        intervalMs: 50,
      });
      const s = await run.handle.result();
      assert.equal(s.group?.worldSize, 2);
      assert.deepEqual(s.group?.changes, []);
    } finally {
      await run.handle.terminate('test over').catch(() => undefined);
    }
  });
});

describe('group shrink', SUITE, () => {
  it('a group that cannot assemble within shrinkAfterMs retries with one rank fewer; the status says why', async () => {
    const store = new FakeStore([5]);
    const run = await env.start(
      trainingPipeline,
      [input({ worldSize: 3, minWorldSize: 1, shrinkAfterMs: 500 })],
      (run) =>
        rankActivities(run, store, {
          // Only two workers: the third rank never gets going.
          beforeJoin: async (r) => {
            if (r.rank === 2) await forever();
          },
        }),
    );
    const s = await run.handle.result();
    assert.deepEqual(
      rankCalls(run)
        .filter((r) => r.generation === 2)
        .map((r) => [r.rank, r.worldSize])
        .sort(),
      [
        [0, 2],
        [1, 2],
      ],
    );
    assert.ok(run.log.includes('g1 rank 2 cancelled'), run.log.join(', '));
    assert.equal(s.state, 'completed');
    assert.equal(s.retries, 0);
    assert.deepEqual(s.group, {
      worldSize: 2,
      minWorldSize: 1,
      generation: 2,
      changes: [{ step: 5, from: 3, to: 2, reason: 'only 2 of 3 ranks started within 500 ms' }],
    });
  });

  it('never below minWorldSize: at the minimum the group waits for its slow rank', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ worldSize: 2, minWorldSize: 2, shrinkAfterMs: 300 })],
      (run) =>
        rankActivities(run, store, {
          beforeJoin: async (r) => {
            if (r.rank === 1) await heartbeatWhile(sleep(1200));
          },
        }),
    );
    const s = await run.handle.result();
    assert.deepEqual(s.group, { worldSize: 2, minWorldSize: 2, generation: 1, changes: [] });
    assert.equal(rankCalls(run).length, 2);
  });

  it('the shrunk world size and the generation count carry across continue-as-new', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ worldSize: 3, minWorldSize: 2, shrinkAfterMs: 500, targetSteps: 20, segmentsPerRun: 1 })],
      (run) =>
        rankActivities(run, store, {
          beforeJoin: async (r) => {
            if (r.rank === 2) await forever();
          },
        }),
    );
    const s = await run.handle.result();
    assert.equal(s.runs, 2);
    assert.deepEqual(
      rankCalls(run)
        .filter((r) => r.toStep === 20)
        .map((r) => [r.generation, r.rank, r.worldSize])
        .sort(),
      [
        [3, 0, 2],
        [3, 1, 2],
      ],
    );
    assert.equal(s.group?.worldSize, 2);
    assert.equal(s.group?.changes.length, 1);
  });
});

describe('stop with a group', SUITE, () => {
  it('stop mid-segment cancels every rank; the pipeline ends stopped on the last checkpoint', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input()], (run) =>
      rankActivities(run, store, {
        afterJoin: async (r) => {
          if (r.rank === 0) store.committed.push(5);
          await forever();
        },
      }),
    );
    await waitFor('both ranks joined', () => run.log.filter((e) => e.endsWith('joined')).length === 2, {
      timeoutMs: 20_000,
      intervalMs: 20,
    });
    await run.handle.signal(stopSignal);
    const s = await run.handle.result();
    assert.ok(
      run.log.includes('g1 rank 0 cancelled') && run.log.includes('g1 rank 1 cancelled'),
      run.log.join(', '),
    );
    assert.equal(s.state, 'stopped');
    assert.equal(s.step, 5);
    assert.equal(s.lastCheckpoint, 5);
  });

  it('the pipeline reads the last checkpoint only after every rank has ended', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input()], (run) =>
      rankActivities(run, store, {
        afterJoin: () => forever(),
        onEnd: async (r) => {
          if (r.rank === 1) await sleep(500);
        },
      }),
    );
    await waitFor('both ranks joined', () => run.log.filter((e) => e.endsWith('joined')).length === 2, {
      timeoutMs: 20_000,
      intervalMs: 20,
    });
    await run.handle.signal(stopSignal);
    await run.handle.result();
    assert.deepEqual(run.log.slice(-2), ['g1 rank 1 ended', 'findLastStep']);
  });
});

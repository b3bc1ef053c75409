/**
 * Sticky segments in trainingPipeline, with mocked activities: a segment whose result names its worker's
 * own queue sends the run's next segment there; a worker that does not take it in time, or an attempt that
 * fails there, sends it back to the shared queue; a failure no retry can fix, or a stop, ends it as on the
 * shared queue.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { stopSignal, trainingPipeline, type PipelineInput } from '../../workflows/pipeline';
import { STICKY_SCHEDULE_TO_START_MS } from '../../workflows/options';
import type { SegmentInput } from '../../activities/types';
import {
  FakeStore,
  gate,
  heartbeatWhile,
  mockedWorkflows,
  SUITE,
  type MockedWorkflowEnv,
} from '../helpers/mock-workflows';

const T = mockedWorkflows('sticky');
let env: MockedWorkflowEnv;
before(async () => {
  env = await T.start();
});

function input(overrides: Partial<PipelineInput> = {}): PipelineInput {
  return {
    dir: '/ckpt/base_checkpoints/d1',
    targetSteps: 30,
    segmentSteps: 10,
    saveEvery: 5,
    training: { program: 'gpt', config: {}, run: { seed: 1 } },
    evaluate: false,
    settings: env.settings,
    ...overrides,
  };
}

/** A store whose segments say that their worker keeps the state, on `queue`. */
const stickyStore = (store: FakeStore, queue: () => string) => (segment: SegmentInput) => ({
  ...store.train(segment),
  stickyQueue: queue(),
});

const onSticky = () => Context.current().info.taskQueue === env.stickyQueue;

describe('the next segment goes to the worker that kept the state', SUITE, () => {
  it('after the first segment, every segment is scheduled on the queue the last one named', async () => {
    const store = new FakeStore();
    const train = stickyStore(store, () => env.stickyQueue);
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({ trainSegment: async (s) => train(s) }),
    );
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.retries, 0);
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.taskQueue),
      [env.settings.taskQueues.train, env.stickyQueue, env.stickyQueue],
    );
  });

  it('a segment that names no queue (a command program, sticky off) keeps the shared queue', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input()], store.activities());
    await run.handle.result();
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.taskQueue),
      Array(3).fill(env.settings.taskQueues.train),
    );
  });
});

describe('fallback to the shared queue', SUITE, () => {
  it('a worker that does not take the segment in time (gone): the shared queue, not counted as a retry', async () => {
    const store = new FakeStore();
    const gone = `${env.settings.taskQueues.train}@gone`;
    const train = stickyStore(store, () => gone);
    const t0 = Date.now();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20 })],
      store.activities({ trainSegment: async (s) => train(s) }),
    );
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 20);
    assert.equal(s.retries, 0);
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.taskQueue),
      [env.settings.taskQueues.train, env.settings.taskQueues.train],
    );
    assert.ok(Date.now() - t0 >= STICKY_SCHEDULE_TO_START_MS, 'waited for the sticky worker first');
  });

  it('an attempt that fails on the worker (retryable): once, then the shared queue; counted as a retry', async () => {
    const store = new FakeStore();
    const train = stickyStore(store, () => env.stickyQueue);
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async (s) => {
          if (onSticky()) throw ApplicationFailure.retryable('worker lost its child', 'ChildDied');
          return train(s);
        },
      }),
    );
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 30);
    assert.equal(s.retries, 2);
    const { train: shared } = env.settings.taskQueues;
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => [c.taskQueue, c.attempt]),
      [
        [shared, 1],
        [env.stickyQueue, 1],
        [shared, 1],
        [env.stickyQueue, 1],
        [shared, 1],
      ],
    );
  });

  it('a failure no retry can fix fails the pipeline there, without a second try', async () => {
    const store = new FakeStore();
    const train = stickyStore(store, () => env.stickyQueue);
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async (s) => {
          if (onSticky()) throw ApplicationFailure.nonRetryable('bad config', 'BadInputInTest');
          return train(s);
        },
      }),
    );
    await assert.rejects(run.handle.result(), WorkflowFailedError);
    assert.equal(run.callsOf('trainSegment').length, 2);
  });

  it('a stop during a segment on the worker ends the pipeline stopped, with no fallback', async () => {
    const store = new FakeStore();
    const train = stickyStore(store, () => env.stickyQueue);
    const release = gate();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async (s) => {
          if (onSticky()) await heartbeatWhile(release.promise);
          return train(s);
        },
      }),
    );
    await run.called('trainSegment', 2);
    await run.handle.signal(stopSignal);
    const s = await run.handle.result();
    release.open();
    assert.equal(s.state, 'stopped');
    assert.equal(s.step, 10);
    assert.equal(run.callsOf('trainSegment').length, 2);
  });
});

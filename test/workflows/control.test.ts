/**
 * Controlling a running trainingPipeline, with mocked activities: pause, resume, stop (which cancels the
 * running segment), the setTargetSteps and setRetention updates, and continue-as-new, which must carry all
 * of that into the next run. Segments wait on gates the tests open, so every signal lands where intended.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import {
  pauseSignal,
  resumeSignal,
  setRetentionUpdate,
  setTargetUpdate,
  statusQuery,
  stopSignal,
  trainingPipeline,
  type PipelineInput,
  type PipelineState,
} from '../../workflows/pipeline';
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

const T = mockedWorkflows('control');
let env: MockedWorkflowEnv;
before(async () => {
  env = await T.start();
});

type Run = MockRun<typeof trainingPipeline>;

function input(overrides: Partial<PipelineInput> = {}): PipelineInput {
  return {
    dir: '/ckpt/base_checkpoints/d1',
    targetSteps: 20,
    segmentSteps: 10,
    saveEvery: 5,
    flags: {},
    evaluate: false,
    settings: env.settings,
    ...overrides,
  };
}

/** Mocks whose first `count` segments each wait for their gate (heartbeating, so a stop reaches them). */
function gatedSegments(store: FakeStore, count: number, overrides: Mocks = {}) {
  const gates = Array.from({ length: count }, () => gate());
  let started = 0;
  const activities = store.activities({
    trainSegment: async (segment) => {
      const own = gates[started++];
      if (own) await heartbeatWhile(own.promise);
      return store.train(segment);
    },
    ...overrides,
  });
  return { gates, activities };
}

function statusUntil(run: Run, what: string, check: (s: PipelineState) => boolean): Promise<PipelineState> {
  return waitFor(
    what,
    async () => {
      const s = await run.handle.query(statusQuery);
      return check(s) ? s : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  );
}

/** Long enough for the workflow to have started another segment, were it going to. */
const SETTLE_MS = 500;

describe('pause and resume', SUITE, () => {
  it('a pause takes effect after the running segment; nothing trains until resume', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(trainingPipeline, [input()], activities);
    await run.called('trainSegment');
    await run.handle.signal(pauseSignal);
    assert.equal((await run.handle.query(statusQuery)).state, 'paused');
    gates[0]!.open();
    await statusUntil(run, 'the first segment done', (s) => s.step === 10 && s.state === 'paused');
    await sleep(SETTLE_MS);
    assert.equal(run.callsOf('trainSegment').length, 1, 'no segment while paused');

    await run.handle.signal(resumeSignal);
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 20);
    assert.equal(s.segment, 2);
  });

  it('a pause that arrives while the pipeline looks for its resume point shows as paused, then running after resume', async () => {
    const store = new FakeStore();
    const found = gate();
    const { gates, activities } = gatedSegments(store, 1, {
      findLastStep: async () => {
        await found.promise;
        return store.last();
      },
    });
    const run = await env.start(trainingPipeline, [input()], activities);
    await run.called('findLastStep');
    await run.handle.signal(pauseSignal);
    found.open();
    await sleep(SETTLE_MS);
    assert.equal(run.callsOf('trainSegment').length, 0, 'nothing trains while paused');
    assert.equal((await run.handle.query(statusQuery)).state, 'paused');
    await run.handle.signal(resumeSignal);
    await run.called('trainSegment');
    try {
      assert.equal((await run.handle.query(statusQuery)).state, 'running');
    } finally {
      gates[0]!.open();
      await run.handle.result();
    }
  });
});

describe('stop', SUITE, () => {
  it('stop mid-segment cancels the segment, waits for it to end, then ends stopped on the last checkpoint', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ evaluate: true, retention: { keepLast: 1 } })],
      (run) =>
        store.activities({
          trainSegment: async () => {
            store.committed.push(5);
            try {
              return await heartbeatWhile(new Promise<never>(() => undefined));
            } catch (err) {
              run.note(err instanceof CancelledFailure ? 'segment cancelled' : `segment failed: ${err}`);
              // The training child takes a moment to stop; the pipeline must wait for it.
              await sleep(300);
              run.note('segment ended');
              throw err;
            }
          },
        }),
    );
    await run.called('trainSegment');
    await run.handle.signal(stopSignal);
    const s = await run.handle.result();
    assert.deepEqual(run.log, [
      'findLastStep',
      'trainSegment',
      'segment cancelled',
      'segment ended',
      'findLastStep',
    ]);
    assert.equal(s.state, 'stopped');
    assert.equal(s.step, 5);
    assert.equal(s.lastCheckpoint, 5);
    assert.equal(s.segment, 0);
  });

  it('stop while paused ends the pipeline at once where it paused', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(trainingPipeline, [input()], activities);
    await run.called('trainSegment');
    await run.handle.signal(pauseSignal);
    gates[0]!.open();
    await statusUntil(run, 'paused after the first segment', (s) => s.step === 10 && s.state === 'paused');
    await run.handle.signal(stopSignal);
    const s = await run.handle.result();
    assert.equal(s.state, 'stopped');
    assert.equal(s.step, 10);
    assert.deepEqual(run.log, ['findLastStep', 'trainSegment']);
  });
});

describe('the setTargetSteps update', SUITE, () => {
  const toSteps = (run: Run) =>
    run.callsOf('trainSegment').map((c) => (c.input as { toStep: number }).toStep);

  it('raising the target of a running pipeline adds segments; the update returns the new status', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(trainingPipeline, [input({ targetSteps: 20 })], activities);
    await run.called('trainSegment');
    const returned = await run.handle.executeUpdate(setTargetUpdate, { args: [40] });
    assert.equal(returned.targetSteps, 40);
    gates[0]!.open();
    const s = await run.handle.result();
    assert.deepEqual(toSteps(run), [10, 20, 30, 40]);
    assert.equal(s.step, 40);
    assert.equal(s.targetSteps, 40);
  });

  it('lowering it ends the pipeline at the new target, with a shorter last segment', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 100, segmentSteps: 30 })],
      activities,
    );
    await run.called('trainSegment');
    await run.handle.executeUpdate(setTargetUpdate, { args: [45] });
    gates[0]!.open();
    const s = await run.handle.result();
    assert.deepEqual(toSteps(run), [30, 45]);
    assert.equal(s.step, 45);
    assert.equal(s.state, 'completed');
  });

  it('a target that is not a positive integer is rejected and changes nothing', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(trainingPipeline, [input({ targetSteps: 20 })], activities);
    await run.called('trainSegment');
    for (const bad of [0, -5, 2.5]) {
      await assert.rejects(
        run.handle.executeUpdate(setTargetUpdate, { args: [bad] }),
        (err: unknown) =>
          err instanceof WorkflowUpdateFailedError &&
          String(err.cause?.message).includes(`must be a positive integer, got ${bad}`),
      );
    }
    assert.equal((await run.handle.query(statusQuery)).targetSteps, 20);
    gates[0]!.open();
    assert.equal((await run.handle.result()).step, 20);
  });
});

describe('the setRetention update', SUITE, () => {
  it('a policy set mid-run prunes from the next segment on; null stops pruning', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 2);
    const run = await env.start(trainingPipeline, [input({ targetSteps: 30 })], activities);
    await run.called('trainSegment');
    const set = await run.handle.executeUpdate(setRetentionUpdate, { args: [{ keepLast: 1 }] });
    assert.deepEqual(set.retention, { keepLast: 1 });
    gates[0]!.open();
    await run.called('trainSegment', 2);
    const cleared = await run.handle.executeUpdate(setRetentionUpdate, { args: [null] });
    assert.equal(cleared.retention, undefined);
    gates[1]!.open();
    const s = await run.handle.result();
    assert.deepEqual(run.log, [
      'findLastStep',
      'trainSegment',
      'pruneCheckpoints',
      'trainSegment',
      'trainSegment',
    ]);
    assert.deepEqual(run.callsOf('pruneCheckpoints')[0]!.input, {
      dir: input().dir,
      policy: { keepLast: 1 },
    });
    assert.deepEqual(s.pruned, [5]);
    assert.equal(s.retention, undefined);
  });
});

describe('continue-as-new', SUITE, () => {
  it('after segmentsPerRun segments the run continues as new with everything the status holds', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 30, segmentsPerRun: 1, evaluate: true, retention: { keepLast: 2 } })],
      activities,
    );
    await run.called('trainSegment');
    await run.handle.executeUpdate(setTargetUpdate, { args: [40] });
    await run.handle.executeUpdate(setRetentionUpdate, { args: [{ keepLast: 1 }] });
    gates[0]!.open();
    const s = await run.handle.result();

    assert.equal(s.runs, 4);
    assert.equal(s.segment, 4);
    assert.equal(s.step, 40);
    assert.equal(s.targetSteps, 40);
    assert.equal(run.callsOf('findLastStep').length, 1, 'only the first run looks for the resume point');
    assert.deepEqual(
      run.callsOf('pruneCheckpoints').map((c) => (c.input as { policy: unknown }).policy),
      [{ keepLast: 1 }, { keepLast: 1 }, { keepLast: 1 }, { keepLast: 1 }],
    );
    assert.deepEqual(
      s.evals.map((e) => e.step),
      [5, 10, 15, 20, 25, 30, 35, 40],
    );
    assert.deepEqual(s.pruned, [5, 10, 15, 20, 25, 30, 35]);
    assert.deepEqual(s.bestMetric, { step: 40, value: 10 / 40 });
    const first = await env.client.workflow.getHandle(run.id, run.handle.firstExecutionRunId).describe();
    assert.equal(first.status.name, 'CONTINUED_AS_NEW');
  });

  it('a pipeline paused when its run continues as new stays paused in the next run', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 30, segmentsPerRun: 1 })],
      activities,
    );
    await run.called('trainSegment');
    await run.handle.signal(pauseSignal);
    gates[0]!.open();
    await statusUntil(run, 'the second run, paused', (s) => s.runs === 2 && s.state === 'paused');
    await sleep(SETTLE_MS);
    assert.equal(run.callsOf('trainSegment').length, 1, 'no segment while paused');
    await run.handle.signal(resumeSignal);
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.runs, 3);
    assert.equal(s.step, 30);
  });
});

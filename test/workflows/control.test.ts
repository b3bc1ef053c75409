/**
 * Controlling a running trainingPipeline, with mocked activities: pause, resume, stop (which cancels the
 * running segment), a workflow cancel and a workflow reset (what `temporal workflow cancel | reset` do),
 * the setTargetSteps and setRetention updates, and continue-as-new, which must carry all of that into the
 * next run. Segments wait on gates the tests open, so every signal lands where intended.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
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
import { CkptState, CkptStep } from '../../workflows/visibility';
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

/** An update refused by its validator as bad input: InvalidArgumentError, marked non-retryable. */
function invalidArgument(err: unknown): err is WorkflowUpdateFailedError & { cause: ApplicationFailure } {
  return (
    err instanceof WorkflowUpdateFailedError &&
    err.cause instanceof ApplicationFailure &&
    err.cause.type === 'InvalidArgumentError' &&
    err.cause.nonRetryable === true
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

/** A segment that commits `commits`, then heartbeats until it is cancelled; it notes why it ended. */
function hangingSegment(run: Run, store: FakeStore, commits: number[], evaluated: number[] = []) {
  return async (): Promise<never> => {
    store.committed.push(...commits);
    for (const step of evaluated) store.evaluate(step);
    try {
      return await heartbeatWhile(new Promise<never>(() => undefined));
    } catch (err) {
      run.note(
        err instanceof CancelledFailure ? `segment cancelled (${err.message})` : `segment failed: ${err}`,
      );
      throw err;
    }
  };
}

describe('cancel (temporal workflow cancel)', SUITE, () => {
  it('cancels the running segment, then ends cancelled on the last checkpoint: status, memo, CkptStep and CkptState say so', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ searchAttributes: ['CkptStep', 'CkptState'] })],
      (run) => store.activities({ trainSegment: hangingSegment(run, store, [5]) }),
    );
    await run.called('trainSegment');
    assert.equal((await run.handle.describe()).typedSearchAttributes.get(CkptState), 'running');
    await run.handle.cancel();
    await assert.rejects(
      run.handle.result(),
      (err: unknown) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure,
    );
    assert.deepEqual(run.log, [
      'findLastStep',
      'trainSegment',
      'segment cancelled (CANCELLED)',
      'findLastStep',
    ]);
    const s = await run.handle.query(statusQuery);
    assert.equal(s.state, 'cancelled');
    assert.equal(s.step, 5);
    assert.equal(s.lastCheckpoint, 5);
    const description = await run.handle.describe();
    assert.equal(description.status.name, 'CANCELLED');
    // (A memo field set to null is removed.)
    assert.deepEqual(description.memo, { step: 5, targetSteps: 20, state: 'cancelled' });
    assert.equal(description.typedSearchAttributes.get(CkptStep), 5);
    assert.equal(description.typedSearchAttributes.get(CkptState), 'cancelled');
  });

  it('a paused pipeline cancelled ends cancelled too', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 1);
    const run = await env.start(trainingPipeline, [input()], activities);
    await run.called('trainSegment');
    await run.handle.signal(pauseSignal);
    gates[0]!.open();
    await statusUntil(run, 'paused after the first segment', (s) => s.step === 10 && s.state === 'paused');
    await run.handle.cancel();
    await assert.rejects(run.handle.result(), WorkflowFailedError);
    const s = await run.handle.query(statusQuery);
    assert.equal(s.state, 'cancelled');
    assert.equal(s.lastCheckpoint, 10);
    assert.equal(((await run.handle.describe()).memo as { state: string }).state, 'cancelled');
  });
});

/**
 * `temporal workflow reset` to the first or the last workflow task of the current run, as its --type
 * FirstWorkflowTask and LastWorkflowTask do; the new run's id.
 */
async function reset(run: Run, to: 'first' | 'last'): Promise<string> {
  const handle = env.client.workflow.getHandle(run.id);
  const { runId } = await handle.describe();
  const events = (await handle.fetchHistory()).events ?? [];
  const completed = events.filter((e) => e.workflowTaskCompletedEventAttributes);
  const point = to === 'first' ? completed[0]! : completed.at(-1)!;
  const response = await env.client.workflowService.resetWorkflowExecution({
    namespace: 'default',
    workflowExecution: { workflowId: run.id, runId },
    reason: 'test',
    workflowTaskFinishEventId: point.eventId,
    requestId: randomUUID(),
  });
  return response.runId!;
}

describe('reset (temporal workflow reset)', SUITE, () => {
  it('mid-segment: the old attempt is cancelled, and the new run shows the checkpoints and eval results the lost part left', async () => {
    const store = new FakeStore();
    const latest = gate();
    const run = await env.start(trainingPipeline, [input({ evaluate: true })], (run) =>
      store.activities({
        trainSegment: async (segment) => {
          const call = run.callsOf('trainSegment').length;
          // The second segment commits 15, and step 15 gets evaluated (by `ckpt eval`, say), before the reset.
          if (call === 2) return hangingSegment(run, store, [15], [15])();
          if (call === 3) await heartbeatWhile(latest.promise);
          return store.train(segment);
        },
      }),
    );
    await run.called('trainSegment', 2);
    const before = await statusUntil(run, 'the second segment running', (s) => s.step === 10);
    assert.deepEqual(before.bestMetric, { step: 10, value: 1 });
    const newRun = await reset(run, 'last');
    await run.called('trainSegment', 3);
    assert.ok(
      run.log.includes('segment cancelled (NOT_FOUND)'),
      `the old attempt learns that its run is gone: ${run.log.join(', ')}`,
    );
    const handle = env.client.workflow.getHandle(run.id);
    const after = await handle.query(statusQuery);
    assert.equal(after.step, 15);
    assert.equal(after.lastCheckpoint, 15);
    assert.deepEqual(after.bestMetric, { step: 15, value: 10 / 15 });
    assert.deepEqual((run.callsOf('trainSegment')[2]!.input as { fromStep: number }).fromStep, 15);
    latest.open();
    const s = (await handle.result()) as PipelineState;
    assert.equal((await handle.describe()).runId, newRun);
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 20);
    assert.deepEqual(s.bestMetric, { step: 20, value: 0.5 });
  });

  it('to the first workflow task: the new run starts from what the store holds', async () => {
    const store = new FakeStore();
    const latest = gate();
    const run = await env.start(trainingPipeline, [input({ evaluate: true })], (run) =>
      store.activities({
        trainSegment: async (segment) => {
          const call = run.callsOf('trainSegment').length;
          if (call === 2) return hangingSegment(run, store, [15], [15])();
          if (call === 3) await heartbeatWhile(latest.promise);
          return store.train(segment);
        },
      }),
    );
    await run.called('trainSegment', 2);
    await reset(run, 'first');
    await run.called('trainSegment', 3);
    const handle = env.client.workflow.getHandle(run.id);
    const after = await handle.query(statusQuery);
    assert.equal(after.step, 15);
    assert.equal(after.lastCheckpoint, 15);
    assert.deepEqual(after.bestMetric, { step: 15, value: 10 / 15 });
    latest.open();
    const s = (await handle.result()) as PipelineState;
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 20);
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
          invalidArgument(err) && err.cause.message.includes(`must be a positive integer, got ${bad}`),
      );
    }
    assert.equal((await run.handle.query(statusQuery)).targetSteps, 20);
    gates[0]!.open();
    assert.equal((await run.handle.result()).step, 20);
  });

  it('a target below the current step is rejected as bad input (typed, not retryable), naming that step', async () => {
    const store = new FakeStore();
    const { gates, activities } = gatedSegments(store, 2);
    const run = await env.start(trainingPipeline, [input({ targetSteps: 30 })], activities);
    gates[0]!.open();
    await statusUntil(run, 'the second segment running', (s) => s.step === 10);
    await assert.rejects(run.handle.executeUpdate(setTargetUpdate, { args: [5] }), (err: unknown) => {
      assert.ok(invalidArgument(err), String(err));
      assert.match(err.cause.message, /target steps 5 is below the current step 10\b/);
      return true;
    });
    // The current step itself is a valid target: the pipeline ends after the running segment.
    await run.handle.executeUpdate(setTargetUpdate, { args: [10] });
    gates[1]!.open();
    const s = await run.handle.result();
    assert.equal(s.targetSteps, 10);
    assert.equal(s.step, 20);
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

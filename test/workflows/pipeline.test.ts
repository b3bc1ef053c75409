/**
 * trainingPipeline with mocked activities: which segments it trains, what it evaluates and prunes and in
 * which order, the best metric, what it shows the Web UI, and how activity failures end (or do not end) it.
 * The real workflow code on the real dev server; the activities are an in-memory FakeStore.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import { trainingPipeline, type PipelineInput } from '../../workflows/pipeline';
import { CkptBest, CkptState, CkptStep } from '../../workflows/visibility';
import {
  FakeStore,
  gate,
  heartbeatWhile,
  mockedWorkflows,
  SUITE,
  type MockedWorkflowEnv,
} from '../helpers/mock-workflows';

const T = mockedWorkflows('pipeline');
let env: MockedWorkflowEnv;
before(async () => {
  env = await T.start();
});

const DIR = '/ckpt/base_checkpoints/d1';
const TRAINING = { program: 'gpt', config: { data: 'corpus.txt' }, run: { seed: 7 } };

function input(overrides: Partial<PipelineInput> = {}): PipelineInput {
  return {
    dir: DIR,
    targetSteps: 30,
    segmentSteps: 10,
    saveEvery: 5,
    training: TRAINING,
    evaluate: false,
    settings: env.settings,
    ...overrides,
  };
}

/** An activity failure's cause, as the workflow failed with it. */
function applicationFailureOf(err: unknown): ApplicationFailure {
  assert.ok(err instanceof WorkflowFailedError, `a WorkflowFailedError, got ${String(err)}`);
  assert.ok(err.cause instanceof ActivityFailure, `caused by an ActivityFailure, got ${String(err.cause)}`);
  assert.ok(
    err.cause.cause instanceof ApplicationFailure,
    `from an ApplicationFailure, got ${err.cause.cause}`,
  );
  return err.cause.cause;
}

describe('segments from the last committed checkpoint to the target', SUITE, () => {
  it('a fresh directory trains 0 → target in segments of segmentSteps and completes', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input({ targetSteps: 25 })], store.activities());
    const s = await run.handle.result();
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.input),
      [
        { dir: DIR, fromStep: 0, toStep: 10, saveEvery: 5, training: TRAINING },
        { dir: DIR, fromStep: 10, toStep: 20, saveEvery: 5, training: TRAINING },
        { dir: DIR, fromStep: 20, toStep: 25, saveEvery: 5, training: TRAINING },
      ],
    );
    assert.deepEqual(run.log, ['findLastStep', 'trainSegment', 'trainSegment', 'trainSegment']);
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 25);
    assert.equal(s.segment, 3);
    assert.equal(s.lastCheckpoint, 25);
    assert.equal(s.loss, 5 / 25);
    assert.equal(s.runs, 1);
    assert.equal(s.retries, 0);
  });

  it('a pipeline started before programs existed (GPT flags in its input) passes them to segments and evaluation', async () => {
    const store = new FakeStore();
    const flags = { data: 'corpus.txt', seed: 7 };
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 10, training: undefined, flags, evaluate: true })],
      store.activities(),
    );
    assert.equal((await run.handle.result()).state, 'completed');
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.input),
      [{ dir: DIR, fromStep: 0, toStep: 10, saveEvery: 5, flags }],
    );
    assert.deepEqual(
      run.callsOf('evaluateCheckpoint').map((c) => c.input),
      [5, 10].map((step) => ({ dir: DIR, step, data: 'corpus.txt' })),
    );
  });

  it('resumes from the step findLastStep reports', async () => {
    const store = new FakeStore([10, 20, 40]);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 100, segmentSteps: 30 })],
      store.activities(),
    );
    const s = await run.handle.result();
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => (c.input as { fromStep: number; toStep: number }).fromStep),
      [40, 70],
    );
    assert.equal(s.step, 100);
    assert.equal(s.segment, 2);
  });

  it('a directory already at the target trains nothing and completes at its last checkpoint', async () => {
    const store = new FakeStore([50]);
    const run = await env.start(trainingPipeline, [input({ targetSteps: 50 })], store.activities());
    const s = await run.handle.result();
    assert.deepEqual(run.log, ['findLastStep', 'listCheckpoints']);
    assert.equal(s.state, 'completed');
    assert.equal(s.step, 50);
    assert.equal(s.lastCheckpoint, 50);
    assert.equal(s.segment, 0);
  });

  it('a segment that saved nothing keeps the last checkpoint of the segment before', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, saveEvery: 1000 })],
      store.activities({
        trainSegment: async (segment) => ({
          ...store.train(segment),
          saved: segment.toStep === 20 ? [] : [10],
        }),
      }),
    );
    const s = await run.handle.result();
    assert.equal(s.step, 20);
    assert.equal(s.lastCheckpoint, 10);
  });
});

describe('task queues', SUITE, () => {
  it('training and evaluation run on the train queue; discovery and pruning on the control queue', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 10, evaluate: true, retention: { keepLast: 1 } })],
      store.activities(),
    );
    await run.handle.result();
    const queueOf = Object.fromEntries(run.calls.map((c) => [c.activity, c.taskQueue]));
    assert.deepEqual(queueOf, {
      findLastStep: env.settings.taskQueues.control,
      trainSegment: env.settings.taskQueues.train,
      stepsWithoutEval: env.settings.taskQueues.control,
      evaluateCheckpoint: env.settings.taskQueues.train,
      pruneCheckpoints: env.settings.taskQueues.control,
      releasePipelineClaim: env.settings.taskQueues.control,
    });
  });
});

describe('the claim on the directory', SUITE, () => {
  const releases = (run: { calls: Array<{ activity: string; input: unknown }> }) =>
    run.calls.filter((c) => c.activity === 'releasePipelineClaim').map((c) => c.input);

  it('is released once when the pipeline ends, by the last run only (not at continue-as-new)', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, segmentsPerRun: 1 })],
      store.activities(),
    );
    const s = await run.handle.result();
    assert.equal(s.state, 'completed');
    assert.equal(s.runs, 2);
    assert.deepEqual(releases(run), [{ dir: DIR, workflowId: run.id }]);
    assert.equal(run.calls.at(-1)?.activity, 'releasePipelineClaim');
  });

  it('is released when the pipeline fails, and a release that fails does not change how it ends', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async () => {
          throw ApplicationFailure.nonRetryable('bad config', 'ProgramConfigError');
        },
        releasePipelineClaim: async () => {
          throw ApplicationFailure.nonRetryable('store down', 'StoreError');
        },
      }),
    );
    const err = await run.handle.result().catch((e: unknown) => e);
    assert.equal(applicationFailureOf(err).type, 'ProgramConfigError');
    assert.deepEqual(releases(run), [{ dir: DIR, workflowId: run.id }]);
    // The memo says how it ended, as for a cancelled or completed pipeline.
    assert.equal((await run.handle.describe()).memo?.state, 'failed');
  });

  it('is released when the pipeline is cancelled', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        // Runs until cancelled.
        trainSegment: () => heartbeatWhile(new Promise<never>(() => undefined)),
      }),
    );
    await run.called('trainSegment');
    await run.handle.cancel();
    await run.handle.result().catch(() => undefined);
    assert.deepEqual(releases(run), [{ dir: DIR, workflowId: run.id }]);
  });
});

describe('evaluation of new checkpoints, then retention', SUITE, () => {
  it('after every segment: evaluate each new checkpoint in step order, then prune', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, evaluate: true, retention: { keepLast: 2 } })],
      store.activities(),
    );
    const s = await run.handle.result();
    const segment = ['trainSegment', 'stepsWithoutEval', 'evaluateCheckpoint', 'evaluateCheckpoint'];
    assert.deepEqual(run.log, [
      'findLastStep',
      ...segment,
      'pruneCheckpoints',
      ...segment,
      'pruneCheckpoints',
    ]);
    assert.deepEqual(
      run.callsOf('evaluateCheckpoint').map((c) => c.input),
      [5, 10, 15, 20].map((step) => ({ dir: DIR, step, program: 'gpt' })),
    );
    assert.deepEqual(
      run.callsOf('pruneCheckpoints').map((c) => c.input),
      [
        { dir: DIR, policy: { keepLast: 2 } },
        { dir: DIR, policy: { keepLast: 2 } },
      ],
    );
    assert.deepEqual(
      s.evals.map((e) => e.step),
      [5, 10, 15, 20],
    );
    assert.deepEqual(s.pruned, [5, 10]);
    assert.deepEqual(store.committed, [15, 20]);
  });

  it('evaluate: false and no retention policy: only training', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input({ targetSteps: 20 })], store.activities());
    await run.handle.result();
    assert.deepEqual(run.log, ['findLastStep', 'trainSegment', 'trainSegment']);
  });

  it('the status keeps the last 50 evaluations', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 51, segmentSteps: 51, saveEvery: 1, evaluate: true })],
      store.activities(),
    );
    const s = await run.handle.result();
    assert.equal(run.callsOf('evaluateCheckpoint').length, 51);
    assert.deepEqual(
      s.evals.map((e) => e.step),
      Array.from({ length: 50 }, (_, i) => i + 2),
    );
  });
});

describe('best-metric tracking', SUITE, () => {
  // Not monotonic, so that "best" is not simply "last".
  const values: Record<number, number> = { 5: 3, 10: 1, 15: 2, 20: 1.5 };
  const metrics = (step: number) => ({ val_bpb: values[step]!, val_loss: 10 - values[step]! });

  it('by default the lowest val_bpb, with its step', async () => {
    const store = new FakeStore([], metrics);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, evaluate: true })],
      store.activities(),
    );
    assert.deepEqual((await run.handle.result()).bestMetric, { step: 10, value: 1 });
  });

  it("mode 'max' keeps the highest value of the named metric", async () => {
    const store = new FakeStore([], metrics);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, evaluate: true, metric: { name: 'val_loss', mode: 'max' } })],
      store.activities(),
    );
    assert.deepEqual((await run.handle.result()).bestMetric, { step: 10, value: 9 });
  });

  it('a pipeline started on a directory with evaluated checkpoints shows their best from the start', async () => {
    const store = new FakeStore([5, 10, 15], metrics);
    for (const step of [5, 10, 15]) store.evaluate(step);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, evaluate: true, metric: { name: 'val_loss', mode: 'max' } })],
      store.activities(),
    );
    const s = await run.handle.result();
    assert.deepEqual(run.log.slice(0, 3), ['findLastStep', 'listCheckpoints', 'trainSegment']);
    assert.deepEqual(
      s.evals.map((e) => e.step),
      [20],
    );
    // Step 10 (val_loss 9) beats step 20 (8.5), which the pipeline evaluated itself.
    assert.deepEqual(s.bestMetric, { step: 10, value: 9 });
  });

  it('a metric the eval results do not have leaves the best metric unset', async () => {
    const store = new FakeStore([], metrics);
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, evaluate: true, metric: { name: 'accuracy', mode: 'max' } })],
      store.activities(),
    );
    const s = await run.handle.result();
    assert.equal(s.evals.length, 4);
    assert.equal(s.bestMetric, null);
  });
});

describe('search attributes and memo', SUITE, () => {
  it('CkptStep, CkptBest and CkptState follow the step, best metric and state when the namespace has them; the memo always', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [
        input({
          targetSteps: 20,
          evaluate: true,
          searchAttributes: ['CkptStep', 'CkptBest', 'CkptState'],
        }),
      ],
      store.activities(),
    );
    await run.handle.result();
    const description = await run.handle.describe();
    assert.equal(description.typedSearchAttributes.get(CkptStep), 20);
    assert.equal(description.typedSearchAttributes.get(CkptBest), 0.5);
    assert.equal(description.typedSearchAttributes.get(CkptState), 'completed');
    assert.deepEqual(description.memo, {
      step: 20,
      targetSteps: 20,
      bestMetric: { step: 20, value: 0.5 },
      state: 'completed',
    });
  });

  it('a namespace without them: no search attribute is set, the memo still is', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input({ targetSteps: 10 })], store.activities());
    await run.handle.result();
    const description = await run.handle.describe();
    assert.equal(description.typedSearchAttributes.get(CkptStep), undefined);
    assert.equal(description.typedSearchAttributes.get(CkptState), undefined);
    assert.equal((description.memo as { state: string }).state, 'completed');
  });

  it('CkptState reads running while a segment trains, then completed', async () => {
    const store = new FakeStore();
    const first = gate();
    let segments = 0;
    const run = await env.start(
      trainingPipeline,
      [input({ targetSteps: 20, searchAttributes: ['CkptState'] })],
      store.activities({
        trainSegment: async (segment) => {
          if (segments++ === 0) await heartbeatWhile(first.promise);
          return store.train(segment);
        },
      }),
    );
    await run.called('trainSegment');
    // The upsert and the segment's activity are commands of the same workflow task.
    const running = await run.handle.describe();
    assert.equal(running.typedSearchAttributes.get(CkptState), 'running');
    first.open();
    await run.handle.result();
    const done = await run.handle.describe();
    assert.equal(done.typedSearchAttributes.get(CkptState), 'completed');
  });
});

class BadInputInTest extends Error {
  override name = 'BadInputInTest';
}

describe('activity failures', SUITE, () => {
  it('a retryable segment failure is retried and the status counts the retry', async () => {
    const store = new FakeStore();
    const run = await env.start(trainingPipeline, [input({ targetSteps: 10 })], (run) =>
      store.activities({
        trainSegment: async (segment) => {
          if (run.callsOf('trainSegment').length === 1) {
            store.committed.push(5);
            throw ApplicationFailure.retryable(
              'training child exited with signal SIGKILL',
              'ChildProcessError',
            );
          }
          return store.train(segment);
        },
      }),
    );
    const s = await run.handle.result();
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.attempt),
      [1, 2],
    );
    assert.equal(s.state, 'completed');
    assert.equal(s.retries, 1);
    assert.equal(s.step, 10);
  });

  it('a segment that stops heartbeating (its worker died) is retried after the heartbeat timeout', async () => {
    const store = new FakeStore();
    const settings = {
      ...env.settings,
      activities: { ...env.settings.activities, heartbeatTimeoutMs: 1000 },
    };
    const run = await env.start(trainingPipeline, [input({ targetSteps: 10, settings })], (run) =>
      store.activities({
        trainSegment: async (segment) => {
          if (run.callsOf('trainSegment').length === 1) {
            // Silent (no heartbeat) for longer than the test takes; the worker's shutdown cancels it.
            await Context.current()
              .sleep(8000)
              .finally(() => run.note('first attempt ended'));
            throw new Error('this attempt was given up long ago');
          }
          return store.train(segment);
        },
      }),
    );
    const s = await run.handle.result();
    assert.deepEqual(run.log, ['findLastStep', 'trainSegment', 'trainSegment'], 'retried before it ended');
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.attempt),
      [1, 2],
    );
    assert.equal(s.retries, 1);
  });

  it('a non-retryable failure fails the pipeline after one attempt, with the type and message', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input({ evaluate: true })],
      store.activities({
        trainSegment: async () => {
          throw ApplicationFailure.nonRetryable(
            'model_000010.safetensors: tensor wte has dtype I64',
            'InvalidArgumentError',
          );
        },
      }),
    );
    const err = await run.handle.result().catch((e: unknown) => e);
    const failure = applicationFailureOf(err);
    assert.equal(failure.type, 'InvalidArgumentError');
    assert.match(failure.message, /tensor wte has dtype I64/);
    assert.deepEqual(run.log, ['findLastStep', 'trainSegment']);
  });

  it("an error type the settings list as non-retryable is not retried, whatever the error's own flag", async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async () => {
          throw new BadInputInTest('--depth must be positive');
        },
      }),
    );
    const failure = applicationFailureOf(await run.handle.result().catch((e: unknown) => e));
    assert.equal(failure.type, 'BadInputInTest');
    assert.equal(run.callsOf('trainSegment').length, 1);
  });

  it('a failure that persists fails the pipeline after exactly maximumAttempts attempts', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        trainSegment: async () => {
          throw ApplicationFailure.retryable('disk full', 'ChildProcessError');
        },
      }),
    );
    const failure = applicationFailureOf(await run.handle.result().catch((e: unknown) => e));
    assert.equal(failure.type, 'ChildProcessError');
    assert.deepEqual(
      run.callsOf('trainSegment').map((c) => c.attempt),
      [1, 2, 3],
    );
  });

  it('a failing control activity fails the pipeline before anything trains', async () => {
    const store = new FakeStore();
    const run = await env.start(
      trainingPipeline,
      [input()],
      store.activities({
        findLastStep: async () => {
          throw ApplicationFailure.nonRetryable('no such bucket: ckpt', 'InvalidArgumentError');
        },
      }),
    );
    const failure = applicationFailureOf(await run.handle.result().catch((e: unknown) => e));
    assert.match(failure.message, /no such bucket/);
    assert.deepEqual(run.log, ['findLastStep']);
  });
});

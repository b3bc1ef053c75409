/**
 * The workflows that schedules start (workflows/maintenance.ts), with mocked activities: evaluate every
 * checkpoint that has no result yet, and apply a retention policy.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import { applyRetention, evaluateNewCheckpoints } from '../../workflows/maintenance';
import { FakeStore, mockedWorkflows, SUITE, type MockedWorkflowEnv } from '../helpers/mock-workflows';

const T = mockedWorkflows('maintenance');
let env: MockedWorkflowEnv;
before(async () => {
  env = await T.start();
});

const DIR = 's3://ckpt/base_checkpoints/d1';

describe('evaluateNewCheckpoints (the evaluation schedule)', SUITE, () => {
  it('evaluates each committed checkpoint without a result, in step order, and returns the results', async () => {
    const store = new FakeStore([30, 10, 20]);
    store.evaluate(20);
    const run = await env.start(
      evaluateNewCheckpoints,
      [{ dir: DIR, data: 'val.txt', settings: env.settings }],
      store.activities(),
    );
    const results = await run.handle.result();
    assert.deepEqual(run.log, ['stepsWithoutEval', 'evaluateCheckpoint', 'evaluateCheckpoint']);
    assert.deepEqual(
      run.callsOf('evaluateCheckpoint').map((c) => c.input),
      [
        { dir: DIR, step: 10, data: 'val.txt' },
        { dir: DIR, step: 30, data: 'val.txt' },
      ],
    );
    assert.deepEqual(results, [store.evaluated.get(10), store.evaluated.get(30)]);
    assert.deepEqual(
      run.calls.map((c) => c.taskQueue),
      [env.settings.taskQueues.control, env.settings.taskQueues.train, env.settings.taskQueues.train],
    );
  });

  it('with nothing new to evaluate it evaluates nothing', async () => {
    const store = new FakeStore([10]);
    store.evaluate(10);
    const run = await env.start(
      evaluateNewCheckpoints,
      [{ dir: DIR, settings: env.settings }],
      store.activities(),
    );
    assert.deepEqual(await run.handle.result(), []);
    assert.deepEqual(run.log, ['stepsWithoutEval']);
  });

  it('an evaluation that fails for good fails the workflow; the results before it stay in the store', async () => {
    const store = new FakeStore([10, 20, 30]);
    const run = await env.start(
      evaluateNewCheckpoints,
      [{ dir: DIR, settings: env.settings }],
      store.activities({
        evaluateCheckpoint: async ({ step }) => {
          if (step === 20)
            throw ApplicationFailure.nonRetryable('meta_000020.json: vocab mismatch', 'InvalidArgumentError');
          return store.evaluate(step);
        },
      }),
    );
    const err = await run.handle.result().catch((e: unknown) => e);
    assert.ok(err instanceof WorkflowFailedError && err.cause instanceof ActivityFailure, String(err));
    assert.match(String(err.cause.cause?.message), /vocab mismatch/);
    assert.deepEqual([...store.evaluated.keys()], [10]);
    assert.equal(run.callsOf('evaluateCheckpoint').length, 2);
  });
});

describe('applyRetention (the retention schedule)', SUITE, () => {
  it('prunes with the given policy on the control queue and returns what was kept and deleted', async () => {
    const store = new FakeStore([10, 20, 30]);
    const run = await env.start(
      applyRetention,
      [{ dir: DIR, policy: { keepLast: 1 }, settings: env.settings }],
      store.activities(),
    );
    const summary = await run.handle.result();
    assert.deepEqual(run.calls, [
      {
        activity: 'pruneCheckpoints',
        input: { dir: DIR, policy: { keepLast: 1 } },
        taskQueue: env.settings.taskQueues.control,
        attempt: 1,
      },
    ]);
    assert.deepEqual(summary.deleted, [10, 20]);
    assert.deepEqual(store.committed, [30]);
  });

  it('passes dryRun on to the pruning activity', async () => {
    const store = new FakeStore([10, 20, 30]);
    const run = await env.start(
      applyRetention,
      [{ dir: DIR, policy: { keepLast: 1 }, dryRun: true, settings: env.settings }],
      store.activities({
        pruneCheckpoints: async ({ dryRun }) => ({
          keep: [{ step: 30, reasons: ['keep-last'] }],
          remove: [
            { step: 10, why: 'beyond keep-last' },
            { step: 20, why: 'beyond keep-last' },
          ],
          deleted: dryRun ? [] : [10, 20],
        }),
      }),
    );
    const summary = await run.handle.result();
    assert.deepEqual(run.callsOf('pruneCheckpoints')[0]!.input, {
      dir: DIR,
      policy: { keepLast: 1 },
      dryRun: true,
    });
    assert.deepEqual(summary.deleted, []);
    assert.equal(summary.remove.length, 2);
  });
});

/**
 * The activities serve a user's own workflow (examples/own-workflow), on a real dev server, with the Worker
 * the example's README shows: its own workflowsPath and `trainingPlugin({ role: 'all' })`. On checkpoints
 * made by `ckpt train`, the workflow picks the largest model, evaluates its last step and prunes the tag.
 * A worker whose workflows module re-exports the pipeline's hosts both: a pipeline completes on it too.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { verifyCheckpoint } from '../../checkpoint';
import { after, before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { evaluateLatestThenPrune } from '../../examples/own-workflow/workflows';
import { trainingPlugin, workerParts } from '../../workers/plugin';
import { ckptAsync, ROOT } from '../helpers/cli';
import { temporalEnv, type TemporalTestEnv } from '../helpers/temporal';
import { tempDir } from '../helpers/tmp';

const EXAMPLE = join(ROOT, 'examples', 'own-workflow', 'workflows.ts');
const TINY = ['--depth', '1', '--n-embd', '16', '--seq-len', '16', '--batch', '2'];

const T = temporalEnv('own-workflow');
let env: TemporalTestEnv;
const root = tempDir('ckpt-own-workflow-');
const checkpointsDir = join(root, 'base_checkpoints');

const manifests = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('manifest_'));

before(
  async () => {
    // The SDK's own lines (and its warning about the workflow that fails on purpose) would drown the output.
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    const [server, ...trained] = await Promise.allSettled([
      T.start(),
      ckptAsync(['train', '--root', root, ...TINY, '--steps', '4', '--save-every', '2']),
      // Another tag, not named d<N>: findLargestModel prefers the d1 model whatever the times.
      ckptAsync(['train', '--root', root, '--tag', 'scratch', ...TINY, '--steps', '2']),
    ]);
    if (server.status === 'rejected') throw server.reason;
    env = server.value;
    for (const run of trained) {
      if (run.status === 'rejected') throw run.reason;
      assert.equal(run.value.code, 0, run.value.stderr);
    }
  },
  { timeout: 300_000 },
);

/** Run `fn` while a Worker with the plugin and `workflowsPath` polls `taskQueue`. */
async function withWorker<T>(workflowsPath: string, taskQueue: string, fn: () => Promise<T>): Promise<T> {
  const connection = await NativeConnection.connect({ address: env.address });
  try {
    const worker = await Worker.create({
      connection,
      taskQueue,
      workflowsPath,
      plugins: [trainingPlugin({ role: 'all', allowedRoots: { checkpoints: [root, env.dir] } })],
    });
    return await worker.runUntil(fn);
  } finally {
    await connection.close();
  }
}

describe("trainingPlugin and a Worker's own workflowsPath", () => {
  it("keeps the Worker's own workflowsPath, and gives the pipeline's when there is none", () => {
    const plugin = trainingPlugin({ role: 'all', warmChild: false });
    const options = { connection: undefined as never, taskQueue: 'q' };
    assert.equal(plugin.configureWorker({ ...options, workflowsPath: EXAMPLE }).workflowsPath, EXAMPLE);
    assert.equal(plugin.configureWorker(options).workflowsPath, workerParts('all').workflowsPath);
    assert.equal(plugin.configureReplayWorker({ workflowsPath: EXAMPLE }).workflowsPath, EXAMPLE);
    // Role train hosts no workflows: it adds none.
    assert.equal(trainingPlugin({ role: 'train' }).configureWorker(options).workflowsPath, undefined);
  });
});

describe(
  'a workflow of your own on the package activities (examples/own-workflow)',
  { timeout: 300_000 },
  () => {
    it('verifies and evaluates the last step of the largest model, saves it elsewhere, then prunes that tag only', async () => {
      const d1 = join(checkpointsDir, 'd1');
      const scratch = join(checkpointsDir, 'scratch');
      assert.deepEqual(manifests(d1), ['manifest_000002.json', 'manifest_000004.json']);
      const queue = `own-${process.pid}`;
      const releaseDir = join(env.dir, 'release', 'd1');
      const result = await withWorker(EXAMPLE, queue, () =>
        env.client.workflow.execute(evaluateLatestThenPrune, {
          taskQueue: queue,
          workflowId: `evaluate-latest-${process.pid}`,
          args: [{ checkpointsDir, keep: { keepLast: 1 }, releaseDir }],
        }),
      );
      assert.equal(result.tag, 'd1');
      assert.equal(result.step, 4);
      // The GPT's metrics, by its primary one.
      assert.deepEqual(result.metric, { name: 'val_bpb', mode: 'min' });
      assert.ok(
        Number.isFinite(result.metrics.val_bpb) && result.metrics.val_bpb! > 0,
        JSON.stringify(result),
      );
      assert.deepEqual(result.deleted, [2]);
      assert.deepEqual(result.remaining, [4]);
      assert.deepEqual(manifests(d1), ['manifest_000004.json']);
      assert.ok(existsSync(join(d1, 'eval_000004.json')), 'the evaluation is written beside the checkpoint');
      assert.deepEqual(manifests(scratch), ['manifest_000002.json'], 'another tag is left alone');
      // The saved copy is a committed checkpoint of its own that verifies.
      assert.ok(result.releasedBytes > 0);
      assert.deepEqual(manifests(releaseDir), ['manifest_000004.json']);
      assert.equal((await verifyCheckpoint(releaseDir, 4)).ok, true);
    });

    it('a workflows module that re-exports the pipeline hosts both on one worker', async () => {
      // What the README tells a user to write, with this checkout's paths for the package's. Inside the
      // checkout: the bundler resolves @temporalio/workflow from the module's own folder up.
      const project = join(ROOT, '.tmp', `own-workflow-${process.pid}`);
      mkdirSync(project, { recursive: true });
      after(() => rmSync(project, { recursive: true, force: true }));
      const combined = join(project, 'workflows.ts');
      writeFileSync(
        combined,
        `export * from ${JSON.stringify(join(ROOT, 'workflows'))};\nexport * from ${JSON.stringify(EXAMPLE.replace(/\.ts$/, ''))};\n`,
      );
      const queue = `own-and-pipeline-${process.pid}`;
      await withWorker(combined, queue, async () => {
        // The pipeline (its orchestration only: --noop trains nothing) with both its queues on this worker's.
        const pipeline = await env.ckpt(
          [
            'pipeline',
            'start',
            '--root',
            join(env.dir, 'noop'),
            '--tag',
            'noop',
            '--steps',
            '4',
            '--segment-steps',
            '2',
            '--noop',
            '--wait',
          ],
          { env: { CKPT_TASK_QUEUE_TRAIN: queue, CKPT_TASK_QUEUE_CONTROL: queue } },
        );
        assert.equal(pipeline.code, 0, pipeline.stderr);
        assert.match(pipeline.stderr, /completed\s+step 4\/4/);
        // The user's workflow, on a folder with no checkpoints: it runs, and fails for good, saying why.
        const empty = join(env.dir, 'empty', 'base_checkpoints');
        mkdirSync(empty, { recursive: true });
        const failed = await env.client.workflow
          .execute(evaluateLatestThenPrune, {
            taskQueue: queue,
            workflowId: `evaluate-empty-${process.pid}`,
            args: [{ checkpointsDir: empty, keep: { keepLast: 1 } }],
          })
          .then(
            () => assert.fail('the workflow completed'),
            (err: unknown) => err,
          );
        assert.ok(failed instanceof WorkflowFailedError, String(failed));
        assert.match((failed.cause as Error).message, /no committed checkpoints under .*empty/);
      });
    });
  },
);

/**
 * A fresh project that uses the published package as its README says: it installs the tarball, writes a
 * training program of its own (plain CommonJS, `defineProgram` from temporal-ckpt/program, a linear
 * regression whose optimizer the loop owns), runs its own Worker with `trainingPlugin({ role: 'all',
 * programs: { mine } })` against a real dev server, and starts a pipeline with `npx ckpt pipeline start
 * --program mine --wait` from a client that does not have the program. The pipeline trains in two segments,
 * evaluates each checkpoint with the program and prunes by retention; `npx ckpt verify` accepts what is
 * left; the Replayer, given the same plugin, replays the finished run's history.
 *
 * Nothing here comes from the repository checkout but the tarball: tsx is removed from the installed tree
 * and no TypeScript source is shipped, so the worker, its training children and the CLI run dist/.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ENV, installTarball, NPX, ok, packedTarball } from '../helpers/package';
import { linearProgram } from '../helpers/linear-program';
import { temporalEnv, withTimeout, type TemporalTestEnv } from '../helpers/temporal';

// The user's program: everything model-specific, nothing from the repository.
const PROGRAM = linearProgram(1, { defineProgram: true });

// The user's worker: one Worker, one task queue, the plugin does the rest.
const WORKER = `
const { NativeConnection, Worker } = require('@temporalio/worker');
const { trainingPlugin } = require('temporal-ckpt/plugin');
const mine = require('./program');

(async () => {
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS });
  try {
    const worker = await Worker.create({
      connection,
      taskQueue: process.env.CKPT_TASK_QUEUE_TRAIN,
      plugins: [trainingPlugin({ role: 'all', programs: { mine } })],
    });
    process.stdout.write('worker created\\n');
    await worker.run();
  } finally {
    await connection.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;

// The user's replay check (e.g. in CI before deploying new workflow code), with the same plugin.
const REPLAY = `
const { Client, Connection } = require('@temporalio/client');
const { Worker } = require('@temporalio/worker');
const { trainingPlugin } = require('temporal-ckpt/plugin');
const mine = require('./program');

(async () => {
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  try {
    const client = new Client({ connection });
    const history = await client.workflow.getHandle(process.argv[2]).fetchHistory();
    await Worker.runReplayHistory(
      { plugins: [trainingPlugin({ role: 'all', programs: { mine } })] },
      history,
      process.argv[2],
    );
    // Again with a workflows module of the project's own that re-exports the pipeline: the plugin keeps it.
    await Worker.runReplayHistory(
      { workflowsPath: require.resolve('./all-workflows'), plugins: [trainingPlugin({ role: 'all', programs: { mine } })] },
      history,
      process.argv[2],
    );
    process.stdout.write(JSON.stringify({ events: history.events.length }) + '\\n');
  } finally {
    await connection.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;

// A workflows module of the project's own (examples/own-workflow/README.md) that also hosts the pipeline.
const ALL_WORKFLOWS = `
export * from 'temporal-ckpt/workflows';
export async function hello(name) {
  return 'hello ' + name;
}
`;

const STEPS = 6;
const SEGMENT = 3;
const pad = (step: number) => String(step).padStart(6, '0');

const T = temporalEnv('plugin');
const work = mkdtempSync(join(tmpdir(), 'ckpt-plugin-'));
let env: TemporalTestEnv;
let consumer = '';
let userEnv: NodeJS.ProcessEnv = {};
let worker: ChildProcess | undefined;
let workerLog = '';
let workerExited: Promise<number | null> | undefined;

// The last test stops the worker gracefully; after a failure, it is killed here.
after(() => {
  if (worker && worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

before(
  async () => {
    // Both settle before either failure is thrown: a server still starting would outlive the cleanup.
    const [server, installed] = await Promise.allSettled([
      T.start(),
      (async () => {
        const packed = await packedTarball();
        consumer = join(work, 'consumer');
        await installTarball(packed.tarball, consumer);
      })(),
    ]);
    if (server.status === 'rejected') throw server.reason;
    if (installed.status === 'rejected') throw installed.reason;
    env = server.value;
    // With role 'all' one worker hosts both halves: the pipeline's two task queues get its one queue.
    const queue = `ckpt-mine-${process.pid}`;
    userEnv = {
      ...ENV,
      TEMPORAL_ADDRESS: env.address,
      TEMPORAL_NAMESPACE: 'default',
      CKPT_TASK_QUEUE_TRAIN: queue,
      CKPT_TASK_QUEUE_CONTROL: queue,
      // The pipeline's root (--root runs): the worker's default allowed root is ./checkpoints.
      CKPT_ALLOWED_ROOTS: join(consumer, 'runs'),
    };
    writeFileSync(join(consumer, 'program.js'), PROGRAM);
    writeFileSync(join(consumer, 'worker.js'), WORKER);
    writeFileSync(join(consumer, 'replay.js'), REPLAY);
    writeFileSync(join(consumer, 'all-workflows.js'), ALL_WORKFLOWS);
  },
  { timeout: 600_000 },
);

describe(
  'a fresh project: its own program on its own Worker through trainingPlugin',
  { timeout: 300_000 },
  () => {
    let pipelineId = '';

    it('npx ckpt pipeline start --program mine --wait completes: checkpoints trained, evaluated, pruned, verified', async () => {
      worker = spawn(process.execPath, ['worker.js'], {
        cwd: consumer,
        env: userEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const child = worker;
      child.stdout!.on('data', (d: Buffer) => (workerLog += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (workerLog = (workerLog + d.toString()).slice(-65536)));
      workerExited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          const check = () => workerLog.includes('worker created') && resolve();
          child.stdout!.on('data', check);
          void workerExited!.then((code) => reject(new Error(`worker.js exited ${code}:\n${workerLog}`)));
        }),
        120_000,
        'worker.js start-up',
      );

      const started = await ok(
        NPX,
        [
          '--no',
          '--',
          'ckpt',
          'pipeline',
          'start',
          '--program',
          'mine',
          '--root',
          'runs',
          '--tag',
          't',
          '--steps',
          String(STEPS),
          '--segment-steps',
          String(SEGMENT),
          '--save-every',
          String(SEGMENT),
          '--eval',
          '--keep-last',
          '1',
          '--wait',
        ],
        consumer,
        180_000,
        userEnv,
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n--- worker.js\n${workerLog.slice(-4000)}`);
      });
      // The client has no program "mine": it says so and leaves it to the workers.
      assert.match(started.stderr, /program "mine" is not known here/);
      pipelineId = started.stdout.trim().split('\n')[0]!;

      const state = (await env.client.workflow.getHandle(pipelineId).result()) as {
        state: string;
        step: number;
        evals: Array<{ step: number; metrics: Record<string, number>; metric: { name: string } }>;
      };
      assert.equal(state.state, 'completed');
      assert.equal(state.step, STEPS);
      // Each checkpoint was evaluated by the program the worker registered, by its own metric.
      assert.deepEqual(
        state.evals.map((e) => e.step),
        [SEGMENT, STEPS],
      );
      assert.equal(state.evals.at(-1)!.metric.name, 'mse');
      assert.ok(state.evals.at(-1)!.metrics.mse! < state.evals[0]!.metrics.mse!, 'training lowered the mse');

      const dir = join(consumer, 'runs', 'base_checkpoints', 't');
      const manifests = readdirSync(dir).filter((f) => f.startsWith('manifest_'));
      assert.deepEqual(manifests, [`manifest_${pad(STEPS)}.json`], 'keep-last 1 pruned step 3');
      assert.ok(existsSync(join(dir, `eval_${pad(STEPS)}.json`)));
      const meta = JSON.parse(readFileSync(join(dir, `meta_${pad(STEPS)}.json`), 'utf8'));
      assert.deepEqual(meta.program, { name: 'linear', version: 1 });
      assert.equal(meta.dataloader_state.sample_index, STEPS * 4, "the program's default batch, every step");

      const verified = await ok(NPX, ['--no', '--', 'ckpt', 'verify', 'runs/base_checkpoints/t'], consumer);
      assert.match(verified.stdout, new RegExp(`ok\\s+step ${STEPS}`));
    });

    it("the Replayer with the same plugin replays the finished pipeline, also from the project's own workflows module", async () => {
      assert.ok(pipelineId, 'the pipeline of the test before ran');
      const replayed = await ok(process.execPath, ['replay.js', pipelineId], consumer, 120_000, userEnv);
      const { events } = JSON.parse(replayed.stdout.trim().split('\n').pop()!) as { events: number };
      assert.ok(events > 10, `history of ${events} events`);
    });

    it('the worker shuts down cleanly on SIGTERM', async () => {
      assert.ok(worker && workerExited, 'the worker started');
      worker.kill('SIGTERM');
      const code = await withTimeout(workerExited, 30_000, 'worker.js shutdown');
      assert.equal(code, 0, workerLog.slice(-4000));
    });
  },
);

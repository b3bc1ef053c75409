/**
 * The published package, installed the way another project installs it: `npm pack` (which builds dist/
 * through prepack), a fresh project that installs the tarball, and then, from that project, plain CommonJS
 * that saves and loads a checkpoint through the package API, runs an asynchronous save (its worker thread
 * entry must load from dist/), takes the activities and workflowsPath for its own Worker and bundles the
 * workflows with @temporalio/worker's bundleWorkflowCode (Worker.create would need a server), TypeScript
 * that type-checks against every export, and the `ckpt` bin: --help, a tiny training run on the default
 * corpus, two ranks through the launcher (which spawns dist/bin/ckpt.js), verify and eval.
 *
 * tsx is removed from the installed tree first: nothing in the installed package may need it.
 *
 * Packing and the offline install are test/helpers/package.ts (shared with test/package/plugin.test.ts:
 * one tarball per state of the sources). Budget: a few minutes (build ~30 s, install ~30 s, bundle and CLI
 * runs ~30 s). Every failure is a failure: nothing here skips.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { installTarball, NPX, ok, packedTarball, ROOT } from '../helpers/package';

// Plain CommonJS, as another project would write it.
const LIBRARY_SCRIPT = `
const assert = require('node:assert/strict');
const { join } = require('node:path');
const ckpt = require('temporal-ckpt');
const sub = require('temporal-ckpt/checkpoint');
const { workerParts, workflowsPath, createWorkers, runWorkers } = require('temporal-ckpt/worker');
const { loadConfig, loadTemporalSettings } = require('temporal-ckpt/config');
const activities = require('temporal-ckpt/activities');
const workflows = require('temporal-ckpt/workflows');
const { buildModel, loadModel } = require('temporal-ckpt/model');
const { train } = require('temporal-ckpt/train');

(async () => {
  const report = {};
  assert.equal(sub.saveCheckpoint, ckpt.saveCheckpoint);
  const dir = join(__dirname, 'lib-ckpt', 'd1');
  const values = new Float32Array([1, 2, 3, 4, 5, 6]);
  await ckpt.saveCheckpoint(dir, 10, { model: { w: ckpt.f32Tensor([2, 3], values) }, meta: { note: 'consumer' } }, { saveDtype: 'BF16' });
  const loaded = await ckpt.loadCheckpoint(dir, 10);
  assert.deepEqual(Array.from(ckpt.toFloat32(loaded.model.w)), [1, 2, 3, 4, 5, 6]);
  assert.equal(loaded.meta.note, 'consumer');
  assert.equal(await ckpt.findLastStep(dir), 10);
  assert.equal((await ckpt.verifyCheckpoint(dir, 10)).ok, true);

  // An asynchronous save writes on a worker thread whose entry is a plain .js file in dist/.
  const saver = new ckpt.AsyncSaver({ workerThread: true });
  await saver.save(dir, 20, { model: { w: ckpt.f32Tensor([2, 3], values) }, meta: {} });
  const done = await saver.finish();
  await saver.close();
  assert.equal(done.committed, true);
  assert.deepEqual(await ckpt.committedSteps(ckpt.openStore(dir)), [10, 20]);

  // Retention through the package: a dry run plans to drop step 10 and keep 20; nothing is deleted.
  const pruned = await ckpt.pruneCheckpoints(dir, { keepLast: 1 }, { dryRun: true });
  assert.deepEqual(pruned.remove.map((r) => r.step), [10]);
  assert.deepEqual(await ckpt.committedSteps(ckpt.openStore(dir)), [10, 20]);

  const parts = workerParts('all');
  for (const name of ['trainSegment', 'evaluateCheckpoint', 'findLastStep', 'pruneCheckpoints']) {
    assert.equal(typeof parts.activities[name], 'function', name);
    // What workers register: the exported activities behind the allowed-roots check.
    const registered = { ...activities.trainActivities, ...activities.controlActivities };
    assert.equal(parts.activities[name], registered[name], name);
    assert.equal(typeof activities[name], 'function', name);
  }
  assert.equal(workerParts('train').workflowsPath, undefined);
  assert.equal(parts.workflowsPath, workflowsPath);
  assert.match(workflowsPath, /node_modules[\\\\/]temporal-ckpt[\\\\/]dist[\\\\/]workflows[\\\\/]index\\.js$/);
  assert.equal(typeof createWorkers, 'function');
  assert.equal(typeof runWorkers, 'function');
  assert.equal(typeof workflows.trainingPipeline, 'function');
  assert.equal(workflows.statusQuery.name, 'status');
  assert.equal(typeof buildModel, 'function');
  assert.equal(typeof loadModel, 'function');
  assert.equal(typeof train, 'function');
  assert.equal(loadTemporalSettings({}).taskQueues.train, 'ckpt-train');
  assert.equal(loadConfig({}).storeRoot, './checkpoints');

  const { bundleWorkflowCode } = require('@temporalio/worker');
  const bundle = await bundleWorkflowCode({ workflowsPath: parts.workflowsPath });
  assert.ok(bundle.code.length > 10000);
  assert.match(bundle.code, /trainingPipeline/);
  report.bundleBytes = bundle.code.length;

  const tsx = Object.keys(require.cache).filter((k) => /[\\\\/]node_modules[\\\\/]tsx[\\\\/]/.test(k));
  assert.deepEqual(tsx, []);
  report.activities = Object.keys(parts.activities);
  process.stdout.write(JSON.stringify(report) + '\\n');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;

// TypeScript against every export, as a TypeScript consumer sees it.
const TYPES_SOURCE = `
import { saveCheckpoint, loadCheckpoint, LocalStore, S3Store, pruneCheckpoints, importSafetensors, type SaveOptions, type RetentionPolicy } from 'temporal-ckpt';
import * as checkpoint from 'temporal-ckpt/checkpoint';
import { buildModel, loadModel, type BuiltModel } from 'temporal-ckpt/model';
import { buildModel as buildModel2 } from 'temporal-ckpt/model/build';
import { initBackend } from 'temporal-ckpt/model/backend';
import { GPT } from 'temporal-ckpt/model/gpt';
import { ByteTokenizer } from 'temporal-ckpt/model/tokenizer';
import { train, type TrainOptions } from 'temporal-ckpt/train';
import { evaluateCheckpoint } from 'temporal-ckpt/train/evaluate';
import { sampleText } from 'temporal-ckpt/train/sample';
import { trainActivities, controlActivities, trainSegment } from 'temporal-ckpt/activities';
import { trainingPipeline, statusQuery, type PipelineInput } from 'temporal-ckpt/workflows';
import { createWorkers, runWorkers, workerParts, workflowsPath, type WorkerSetup } from 'temporal-ckpt/worker';
import { loadConfig, loadTemporalSettings, type CkptConfig } from 'temporal-ckpt/config';

const save: typeof saveCheckpoint = checkpoint.saveCheckpoint;
const options: SaveOptions = { rank: 0, worldSize: 1, saveDtype: 'BF16' };
const policy: RetentionPolicy = { keepLast: 2 };
const parts: { workflowsPath?: string } = workerParts('control');
const path: string = workflowsPath;
const config: CkptConfig = loadConfig({});
export const all = [save, options, policy, parts, path, config, loadCheckpoint, LocalStore, S3Store, pruneCheckpoints, importSafetensors,
  buildModel, buildModel2, loadModel, initBackend, GPT, ByteTokenizer, train, evaluateCheckpoint, sampleText, trainActivities,
  controlActivities, trainSegment, trainingPipeline, statusQuery, createWorkers, runWorkers, loadTemporalSettings];
export type Types = [BuiltModel, TrainOptions, PipelineInput, WorkerSetup];
`;

describe('the published package', { timeout: 600_000 }, () => {
  let consumer = '';
  let files: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'ckpt-pack-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  before(
    async () => {
      const packed = await packedTarball();
      files = packed.files;
      consumer = join(work, 'consumer');
      await installTarball(packed.tarball, consumer);
    },
    { timeout: 600_000 },
  );

  it('ships dist/ (JS, declarations, source maps), bin, data, the docs, the native installer, the Python client and the licence, and no TypeScript sources or tests', () => {
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'CHANGELOG.md',
      'bin/ckpt.js',
      'data/tiny-corpus.txt',
      'dist/bin/ckpt.js',
      'dist/cli/main.js',
      'dist/checkpoint/index.js',
      'dist/checkpoint/index.d.ts',
      'dist/checkpoint/index.js.map',
      'dist/checkpoint/async-save-thread.js',
      'dist/checkpoint/async-save-worker.js',
      'dist/workflows/index.js',
      'dist/workers/worker.js',
      'dist/temporal.config.js',
      'infra/install-native.sh',
      'python/temporal_ckpt/__init__.py',
    ]) {
      assert.ok(files.includes(f), `${f} is not in the tarball`);
    }
    const stray = files.filter(
      (f) =>
        (f.endsWith('.ts') && !f.endsWith('.d.ts')) ||
        f.startsWith('test/') ||
        f.startsWith('dist/test/') ||
        f.startsWith('dist/bench/'),
    );
    assert.deepEqual(stray, []);
    const top = [...new Set(files.map((f) => f.split('/')[0]))].sort();
    assert.deepEqual(top, [
      'BENCHMARKS.md',
      'CHANGELOG.md',
      'LICENSE',
      'README.md',
      'RELIABILITY.md',
      'bin',
      'data',
      'dist',
      'docs',
      'infra',
      'package.json',
      'python',
    ]);
  });

  it('from CommonJS: saves and loads a checkpoint, saves on a worker thread, and gives a Worker its activities and a workflowsPath that bundles', async () => {
    writeFileSync(join(consumer, 'library.js'), LIBRARY_SCRIPT);
    const r = await ok(process.execPath, ['library.js'], consumer);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      activities: string[];
      bundleBytes: number;
    };
    assert.ok(report.activities.includes('trainSegment'));
    assert.ok(report.bundleBytes > 10000);
  });

  it('type-checks against every export (moduleResolution nodenext and node10)', async () => {
    writeFileSync(join(consumer, 'types.ts'), TYPES_SOURCE);
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const common = [
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--target',
      'ES2022',
      '--types',
      'node',
      'types.ts',
    ];
    await ok(
      process.execPath,
      [tsc, ...common, '--module', 'nodenext', '--moduleResolution', 'nodenext'],
      consumer,
    );
    await ok(
      process.execPath,
      [tsc, ...common, '--module', 'commonjs', '--moduleResolution', 'node10', '--ignoreDeprecations', '5.0'],
      consumer,
    );
  });

  it('npx ckpt: --help, training on the default corpus, two ranks through the launcher, verify and eval', async () => {
    const help = await ok(NPX, ['--no', '--', 'ckpt', '--help'], consumer);
    assert.match(help.stdout, /^ckpt: durable training pipelines and checkpoints/);
    assert.match(help.stdout, /pipeline start/);
    const tiny = ['--depth', '1', '--n-embd', '16', '--seq-len', '16', '--batch', '2', '--save-every', '1'];
    const trained = await ok(
      NPX,
      ['--no', '--', 'ckpt', 'train', '--dir', 'runs/d1', '--steps', '2', ...tiny],
      consumer,
    );
    assert.match(trained.stderr, /trained d1 from step 0 to 2/);
    await ok(
      NPX,
      ['--no', '--', 'ckpt', 'train', '--dir', 'runs/ranks', '--steps', '2', '--nproc', '2', ...tiny],
      consumer,
    );
    const verified = await ok(NPX, ['--no', '--', 'ckpt', 'verify', 'runs/ranks'], consumer);
    assert.match(verified.stdout, /ok\s+step 2/);
    const evaluated = await ok(NPX, ['--no', '--', 'ckpt', 'eval', 'runs/d1', '--json'], consumer);
    assert.equal((JSON.parse(evaluated.stdout) as { step: number }).step, 2);
    // The entry activities spawn: dist/bin/ckpt.js.
    const last = await ok(
      process.execPath,
      [join('node_modules', 'temporal-ckpt', 'dist', 'bin', 'ckpt.js'), 'last-step', 'runs/d1'],
      consumer,
    );
    assert.equal(last.stdout.trim(), '2');
    assert.ok(existsSync(join(consumer, 'runs', 'd1', 'eval_000002.json')));
  });
});

/**
 * A command program (the Python example) through the durable pipeline on a real dev server: a training
 * worker SIGKILLed mid-segment (the pipeline completes bit for bit as one `ckpt train --exec`, and no
 * Python process of the killed worker outlives the heartbeat timeout), eval-on-new-checkpoint and
 * keep-best by the command's metric, `pipeline stop` within the grace period, and two ranks over TCP with
 * one rank's worker killed.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { committedSteps, openStore } from '../../checkpoint';
import type { PipelineState } from '../../workflows/pipeline';
import { ROOT } from '../helpers/cli';
import {
  pendingActivities,
  sha256,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';

const TRAIN = 'python3 examples/python-mlp/train.py';
const EVAL = 'python3 examples/python-mlp/eval.py';
const STEPS = 120;
const SAVE_EVERY = 10;
// Slow enough that a kill lands mid-segment, quick enough to keep the file short.
const SLOW = { CKPT_EXAMPLE_SLEEP_MS: '25' };
/** Each training worker is told it has one GPU (no GPU is used: the command sees which one it got). */
const gpuOf = new Map<string, string>();
let nextGpu = 0;
async function startTrainer(): Promise<TestWorker> {
  const gpu = String(nextGpu++);
  const worker = await env.startWorker('train', { env: { ...SLOW, CKPT_GPUS: gpu } });
  gpuOf.set(worker.identity, gpu);
  return worker;
}

/** The value of `name` in a process's environment. */
function envOf(pid: number, name: string): string | undefined {
  const entry = readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .find((e) => e.startsWith(`${name}=`));
  return entry?.slice(name.length + 1);
}

// Ad hoc commands run only from folders the workers allow (docs/security.md).
const T = temporalEnv('commands', { env: { CKPT_ALLOWED_PROGRAM_ROOTS: ROOT } });
let env: TemporalTestEnv;
const trainers: TestWorker[] = [];

const dirOf = (root: string, tag: string) => join(root, 'base_checkpoints', tag);
const pad = (n: number) => String(n).padStart(6, '0');
const finalFiles = (dir: string, ranks = 1) =>
  [
    `model_${pad(STEPS)}.safetensors`,
    ...Array.from({ length: ranks }, (_, r) => `optim_${pad(STEPS)}_rank${r}.safetensors`),
  ].map((f) => sha256(join(dir, f)));

/** Python processes of the example training `dir` (found through /proc: their command line and environment). */
function pythonsOf(dir: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.includes('python-mlp/train.py')) continue;
      if (readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`CKPT_DIR=${dir}`))
        out.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    // A zombie has no cmdline left to read; it no longer runs.
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8') !== '';
  } catch {
    return false;
  }
}

async function startPipeline(tag: string, extra: string[]): Promise<{ id: string; dir: string }> {
  const res = await env.ckpt([
    'pipeline',
    'start',
    '--exec',
    TRAIN,
    '--eval-exec',
    EVAL,
    '--program',
    'mlp',
    '--root',
    join(env.dir, 'runs'),
    '--tag',
    tag,
    '--steps',
    String(STEPS),
    '--save-every',
    String(SAVE_EVERY),
    ...extra,
  ]);
  assert.equal(res.code, 0, res.stderr);
  return { id: res.stdout.trim(), dir: dirOf(join(env.dir, 'runs'), tag) };
}

function reference(tag: string, extra: string[] = []): Promise<{ code: number; stderr: string }> {
  return env.ckpt([
    'train',
    '--exec',
    TRAIN,
    '--program',
    'mlp',
    '--root',
    join(env.dir, 'ref'),
    '--tag',
    tag,
    '--steps',
    String(STEPS),
    '--save-every',
    String(SAVE_EVERY),
    ...extra,
  ]);
}

before(async () => {
  env = await T.start();
  [, trainers[0]!, trainers[1]!] = await Promise.all([
    env.startWorker('control'),
    startTrainer(),
    startTrainer(),
  ]);
});

describe('a Python command program through the pipeline', () => {
  it('survives a killed training worker, leaves no Python process behind, and ends bit-for-bit as ckpt train --exec', async () => {
    const ref = reference('one');
    const { id, dir } = await startPipeline('one', [
      '--segment-steps',
      '80',
      '--eval',
      '--keep-last',
      '2',
      '--keep-best',
      '1',
      '--metric',
      'accuracy',
      '--mode',
      'max',
    ]);
    const running = await waitFor(
      'the first segment past step 20',
      async () => {
        const segment = (await pendingActivities(env.client, id)).find(
          (a) => a.activityType === 'trainSegment' && a.attempt === 1 && a.worker !== '',
        );
        const committed = (await committedSteps(openStore(dir))).at(-1) ?? 0;
        return segment && committed >= 20 && pythonsOf(dir).length > 0 ? segment : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 100 },
    );
    const victim = trainers.find((w) => w.identity === running.worker)!;
    assert.ok(victim, `the segment runs on ${running.worker}`);
    const pythons = pythonsOf(dir);
    // One training slot per GPU: the command sees only its worker's GPU.
    assert.deepEqual(
      pythons.map((pid) => envOf(pid, 'CUDA_VISIBLE_DEVICES')),
      pythons.map(() => gpuOf.get(victim.identity)),
    );
    await victim.kill();
    // The heartbeat timeout of these tests is 3 s: by then the killed worker's command must be gone.
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(
      pythons.filter(alive),
      [],
      `Python processes ${pythons.join(', ')} of the killed worker still run`,
    );
    trainers[trainers.indexOf(victim)] = await startTrainer();

    const state = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(state.state, 'completed');
    assert.equal(state.step, STEPS);
    assert.ok(state.retries >= 1, `retries: ${state.retries}`);
    const done = await ref;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(finalFiles(dir), finalFiles(dirOf(join(env.dir, 'ref'), 'one')));
    // Evaluated by the command's evaluation, ranked by its metric (higher is better).
    assert.ok(state.evals.length > 0);
    assert.deepEqual(state.evals.at(-1)!.metric, { name: 'accuracy', mode: 'max' });
    const best = Math.max(...state.evals.map((e) => e.metrics.accuracy!));
    assert.equal(state.bestMetric?.value, best);
    assert.ok(readdirSync(dir).includes(`eval_${pad(STEPS)}.json`));
  });

  it('pipeline stop ends the Python child within its grace period', async () => {
    const { id, dir } = await startPipeline('stop', ['--kill-grace', '5']);
    await waitFor('the command training', async () => (pythonsOf(dir).length > 0 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 100,
    });
    const pythons = pythonsOf(dir);
    const stopped = Date.now();
    const res = await env.ckpt(['pipeline', 'stop', id]);
    assert.equal(res.code, 0, res.stderr);
    await waitFor('the command gone', async () => (pythons.some(alive) ? undefined : true), {
      timeoutMs: 5000,
      intervalMs: 50,
    });
    const seconds = (Date.now() - stopped) / 1000;
    process.stderr.write(`pipeline stop → Python child gone: ${seconds.toFixed(2)} s\n`);
    const state = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(state.state, 'stopped');
  });

  it('two ranks over TCP: one rank worker killed, the group retries and ends bit-for-bit as ckpt train --exec --nproc 2', async () => {
    const ref = reference('two', ['--nproc', '2']);
    const { id, dir } = await startPipeline('two', ['--world-size', '2']);
    const victimIdentity = await waitFor(
      'both ranks training past step 20',
      async () => {
        const ranks = (await pendingActivities(env.client, id)).filter(
          (a) => a.activityType === 'trainRank' && a.worker !== '',
        );
        const committed = (await committedSteps(openStore(dir))).at(-1) ?? 0;
        return ranks.length === 2 && committed >= 20 ? ranks[1]!.worker : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 100 },
    );
    const victim = trainers.find((w) => w.identity === victimIdentity)!;
    assert.ok(victim, `rank runs on ${victimIdentity}`);
    await victim.kill();
    trainers[trainers.indexOf(victim)] = await startTrainer();
    const state = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(state.state, 'completed');
    assert.ok((state.group?.generation ?? 0) >= 2, 'the segment ran again as a new generation');
    const done = await ref;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(finalFiles(dir, 2), finalFiles(dirOf(join(env.dir, 'ref'), 'two'), 2));
  });
});

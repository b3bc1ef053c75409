/**
 * A program other than the GPT through the durable pipeline on a real dev server: the example program,
 * registered by name on the training workers (`ckpt worker --program mlp=PATH`), trained by a pipeline
 * whose training worker is SIGKILLed mid-segment; it completes bit-for-bit as one uninterrupted
 * `ckpt train --program PATH`. A pipeline naming a program no worker has fails for good, naming both.
 * The same program named by path (the workers allow its folder with CKPT_ALLOWED_PROGRAM_ROOTS): a
 * pipeline whose --keep-best ranks by the program's own metric, and an evaluation schedule.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { committedSteps, openStore } from '../../checkpoint';
import type { EvalSummary } from '../../activities/types';
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

const EXAMPLE = join(ROOT, 'examples', 'mlp-classifier', 'program.ts');
// Big enough that a segment lasts seconds (the kill must land mid-segment), small enough to stay quick.
const SIZE = ['--config', '{"features":128,"hidden":512}', '--batch', '128'];
const STEPS = 200;
const SAVE_EVERY = 10;
const KILL_FROM = 20;

const T = temporalEnv('programs');
let env: TemporalTestEnv;
const trainers: TestWorker[] = [];
let reference: string[];

const dirOf = (root: string, tag: string) => join(root, 'base_checkpoints', tag);
const finalFiles = (dir: string) =>
  [
    `model_${String(STEPS).padStart(6, '0')}.safetensors`,
    `optim_${String(STEPS).padStart(6, '0')}_rank0.safetensors`,
  ].map((f) => sha256(join(dir, f)));

async function pipelineResult(id: string): Promise<PipelineState> {
  return env.client.workflow.getHandle(id).result() as Promise<PipelineState>;
}

before(async () => {
  env = await T.start();
  const refRun = env.ckpt([
    'train',
    '--program',
    EXAMPLE,
    '--root',
    join(env.dir, 'ref'),
    ...SIZE,
    '--steps',
    String(STEPS),
    '--save-every',
    String(SAVE_EVERY),
  ]);
  const register = {
    args: ['--program', `mlp=${EXAMPLE}`],
    // The tests below name the program by its path as well.
    env: { CKPT_ALLOWED_PROGRAM_ROOTS: dirname(EXAMPLE) },
  };
  [, trainers[0]!, trainers[1]!] = await Promise.all([
    env.startWorker('control'),
    env.startWorker('train', register),
    env.startWorker('train', register),
  ]);
  const ref = await refRun;
  assert.equal(ref.code, 0, ref.stderr);
  reference = finalFiles(dirOf(join(env.dir, 'ref'), 'mlp'));
});

describe('a worker-registered program through the pipeline', () => {
  it('survives a killed training worker and ends bit-for-bit as ckpt train --program', async () => {
    const root = join(env.dir, 'runs');
    const start = await env.ckpt([
      'pipeline',
      'start',
      '--program',
      'mlp',
      '--root',
      root,
      '--tag',
      'mlp',
      ...SIZE,
      '--steps',
      String(STEPS),
      '--segment-steps',
      '150',
      '--save-every',
      String(SAVE_EVERY),
      '--eval',
      '--keep-last',
      '2',
      '--keep-best',
      '1',
      '--metric',
      'val_accuracy',
      '--mode',
      'max',
    ]);
    assert.equal(start.code, 0, start.stderr);
    assert.match(
      start.stderr,
      /program "mlp" is not known here; the training workers must have it registered/,
    );
    const id = start.stdout.trim();
    const dir = dirOf(root, 'mlp');
    const running = await waitFor(
      `the first segment at step ${KILL_FROM}`,
      async () => {
        const segment = (await pendingActivities(env.client, id)).find(
          (a) => a.activityType === 'trainSegment' && a.attempt === 1 && a.worker !== '',
        );
        const committed = (await committedSteps(openStore(dir))).at(-1) ?? 0;
        return segment && committed >= KILL_FROM ? segment : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 100 },
    );
    const victim = trainers.find((w) => w.identity === running.worker)!;
    assert.ok(victim, `the segment runs on ${running.worker}`);
    await victim.kill();
    const state = await pipelineResult(id);
    assert.equal(state.state, 'completed');
    assert.equal(state.step, STEPS);
    assert.ok(state.retries >= 1, `retries: ${state.retries}`);
    assert.deepEqual(finalFiles(dir), reference);
    // Evaluated by the program's own primary metric (accuracy: higher is better), and keep-best used it.
    assert.ok(state.evals.length > 0);
    assert.deepEqual(state.evals.at(-1)!.metric, { name: 'val_accuracy', mode: 'max' });
    const best = Math.max(...state.evals.map((e) => e.metrics.val_accuracy!));
    assert.equal(state.bestMetric?.value, best);
  });

  it('a pipeline naming a program no worker has fails for good, naming the program and the worker', async () => {
    const start = await env.ckpt([
      'pipeline',
      'start',
      '--program',
      'nosuch',
      '--root',
      join(env.dir, 'runs'),
      '--tag',
      'nosuch',
      '--steps',
      '4',
    ]);
    assert.equal(start.code, 0, start.stderr);
    const err = await pipelineResult(start.stdout.trim()).then(
      () => assert.fail('the pipeline completed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof WorkflowFailedError, String(err));
    const cause = (err.cause as Error & { cause?: Error & { type?: string } }).cause;
    assert.equal(cause?.type, 'ProgramNotRegisteredError');
    // The worker as the server knows it (`temporal workflow describe`): its identity, <role>-<pid>@<host>.
    const named = /program "nosuch" is not registered on worker (\S+) \(it has: gpt, mlp\)/.exec(
      cause!.message,
    );
    assert.ok(named, cause!.message);
    assert.ok(
      trainers.some((w) => w.identity === named[1]),
      `${named[1]} is not one of ${trainers.map((w) => w.identity).join(', ')}`,
    );
  });
});

describe('a program named by its path', () => {
  it("a pipeline with --keep-best and no --metric ranks by the program's metric (val_accuracy, max)", async () => {
    const root = join(env.dir, 'by-path');
    const start = await env.ckpt([
      'pipeline',
      'start',
      '--program',
      EXAMPLE,
      '--root',
      root,
      '--steps',
      '6',
      '--segment-steps',
      '6',
      '--save-every',
      '2',
      '--eval',
      '--keep-last',
      '1',
      '--keep-best',
      '1',
    ]);
    assert.equal(start.code, 0, start.stderr);
    const state = await pipelineResult(start.stdout.trim());
    assert.equal(state.state, 'completed');
    assert.deepEqual(state.retention?.keepBest, { k: 1, metric: 'val_accuracy', mode: 'max' });
    const accuracy = new Map(state.evals.map((e) => [e.step, e.metrics.val_accuracy!]));
    assert.deepEqual([...accuracy.keys()], [2, 4, 6]);
    for (const e of state.evals) assert.deepEqual(e.metric, { name: 'val_accuracy', mode: 'max' });
    // Best: the highest accuracy (the newer step on a tie); "min" would have picked another step.
    const ranked = [...accuracy].sort(([sa, a], [sb, b]) => b - a || sb - sa);
    const [bestStep, bestValue] = ranked[0]!;
    assert.notEqual(ranked.at(-1)![1], bestValue, `accuracies differ: ${JSON.stringify([...accuracy])}`);
    assert.deepEqual(state.bestMetric, { step: bestStep, value: bestValue });
    const dir = dirOf(root, 'mlp');
    assert.deepEqual(
      await committedSteps(openStore(dir)),
      [...new Set([bestStep, 6])].sort((a, b) => a - b),
    );
    assert.deepEqual(
      [...state.pruned].sort((a, b) => a - b),
      [2, 4].filter((s) => s !== bestStep),
    );
  });

  it('ckpt schedule eval create --program PATH: a triggered run writes eval_<step>.json', async () => {
    const root = join(env.dir, 'scheduled');
    const trained = await env.ckpt([
      'train',
      '--program',
      EXAMPLE,
      '--root',
      root,
      '--steps',
      '4',
      '--save-every',
      '2',
    ]);
    assert.equal(trained.code, 0, trained.stderr);
    const dir = dirOf(root, 'mlp');
    // A relative path: the client makes it absolute (the CLI runs in the repository root).
    const created = await env.ckpt([
      'schedule',
      'eval',
      'create',
      '--dir',
      dir,
      '--every',
      '1h',
      '--program',
      'examples/mlp-classifier/program.ts',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    try {
      const triggered = await env.ckpt(['schedule', 'trigger', id]);
      assert.equal(triggered.code, 0, triggered.stderr);
      const handle = env.client.schedule.getHandle(id);
      const action = await waitFor(
        'the triggered run',
        async () => (await handle.describe()).info.recentActions[0]?.action,
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      const results = (await env.client.workflow
        .getHandle(action.workflow.workflowId)
        .result()) as EvalSummary[];
      assert.deepEqual(
        results.map((r) => r.step),
        [2, 4],
      );
      for (const r of results) {
        const file = join(dir, `eval_${String(r.step).padStart(6, '0')}.json`);
        assert.ok(existsSync(file), file);
        const written = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
        assert.equal(written.program, 'mlp-classifier');
        assert.equal(written.val_accuracy, r.metrics.val_accuracy);
        assert.deepEqual(r.metric, { name: 'val_accuracy', mode: 'max' });
      }
    } finally {
      await env.ckpt(['schedule', 'delete', id]);
    }
  });
});

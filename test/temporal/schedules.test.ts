/**
 * The maintenance workflows on a real dev server: an evaluation schedule created, listed, triggered and
 * deleted through `ckpt schedule`, and applyRetention deleting exactly what `ckpt prune --dry-run` plans.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ScheduleNotFoundError } from '@temporalio/client';
import { committedSteps, openStore, type RetentionPolicy } from '../../checkpoint';
import type { EvalSummary, PruneSummary } from '../../activities/types';
import { SMALL_MODEL, temporalEnv, waitFor, type TemporalTestEnv } from '../helpers/temporal';

const T = temporalEnv('schedules');
let env: TemporalTestEnv;

async function train(tag: string, steps: number, saveEvery: number): Promise<string> {
  const root = join(env.dir, 'runs');
  const res = await env.ckpt([
    'train',
    '--root',
    root,
    '--tag',
    tag,
    ...SMALL_MODEL,
    '--steps',
    String(steps),
    '--save-every',
    String(saveEvery),
  ]);
  assert.equal(res.code, 0, res.stderr);
  return join(root, 'base_checkpoints', tag);
}

const evalFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => /^eval_\d+\.json$/.test(f))
    .sort();

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

let evalDir: string;
let retentionDir: string;
before(async () => {
  env = await T.start();
  [evalDir, retentionDir] = await Promise.all([
    train('evaluated', 12, 4),
    train('pruned', 20, 2),
    env.startWorker('all'),
  ]).then(([a, b]) => [a, b]);
});

describe('an evaluation schedule', () => {
  it('created, listed and triggered through the CLI, evaluates exactly the checkpoints without a result, then is deleted', async () => {
    // One checkpoint already has a result (written by hand): it must stay untouched.
    const handWritten = join(evalDir, 'eval_000004.json');
    writeFileSync(handWritten, JSON.stringify({ step: 4, val_bpb: 9.5, val_loss: 6.5 }) + '\n');
    const before = { bytes: readFileSync(handWritten), mtimeMs: statSync(handWritten).mtimeMs };

    // Every hour: it does not fire by itself during the test; the trigger runs it now.
    const created = await env.ckpt(['schedule', 'eval', 'create', '--dir', evalDir, '--every', '1h']);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.match(id, /^ckpt-eval-/);

    const listed = await env.ckpt(['schedule', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as Array<{
      id: string;
      workflow: string;
      paused: boolean;
      note: string;
    }>;
    const row = rows.find((r) => r.id === id);
    assert.ok(row, `schedule ${id} in ${listed.stdout}`);
    assert.equal(row.workflow, 'evaluateNewCheckpoints');
    assert.equal(row.paused, false);
    assert.ok(row.note.includes(evalDir), row.note);

    const triggered = await env.ckpt(['schedule', 'trigger', id]);
    assert.equal(triggered.code, 0, triggered.stderr);
    const handle = env.client.schedule.getHandle(id);
    const action = await waitFor(
      'the triggered run',
      async () => (await handle.describe()).info.recentActions[0]?.action,
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    const results = await withTimeout(
      env.client.workflow.getHandle(action.workflow.workflowId).result() as Promise<EvalSummary[]>,
      120_000,
      'the evaluation run',
    );
    assert.deepEqual(
      results.map((r) => r.step),
      [8, 12],
    );
    assert.deepEqual(evalFiles(evalDir), ['eval_000004.json', 'eval_000008.json', 'eval_000012.json']);
    for (const r of results) {
      const written = JSON.parse(
        readFileSync(join(evalDir, `eval_${String(r.step).padStart(6, '0')}.json`), 'utf8'),
      ) as { step: number; val_bpb: number };
      assert.equal(written.step, r.step);
      assert.equal(written.val_bpb, r.metrics.val_bpb);
      assert.ok(Number.isFinite(written.val_bpb) && written.val_bpb > 0);
    }
    assert.deepEqual(readFileSync(handWritten), before.bytes);
    assert.equal(statSync(handWritten).mtimeMs, before.mtimeMs);

    const deleted = await env.ckpt(['schedule', 'delete', id]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const after = JSON.parse((await env.ckpt(['schedule', 'list', '--json'])).stdout) as Array<{
      id: string;
    }>;
    assert.ok(!after.some((r) => r.id === id), `still listed: ${JSON.stringify(after)}`);
    await assert.rejects(handle.describe(), ScheduleNotFoundError);
    const again = await env.ckpt(['schedule', 'delete', id]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /no schedule with id/);
  });
});

describe('applyRetention', () => {
  it('deletes exactly what ckpt prune --dry-run --json plans for the same policy', async () => {
    // Metrics for the older half (step 6 best); 12..20 stay unevaluated, which keep-best keeps.
    for (const [step, bpb] of [
      [2, 3.1],
      [4, 2.9],
      [6, 2.2],
      [8, 2.8],
      [10, 2.7],
    ] as const) {
      writeFileSync(
        join(retentionDir, `eval_${String(step).padStart(6, '0')}.json`),
        JSON.stringify({ step, val_bpb: bpb, val_loss: bpb }),
      );
    }
    const flags = [
      '--keep-last',
      '2',
      '--keep-best',
      '1',
      '--metric',
      'val_bpb',
      '--mode',
      'min',
      '--keep-every',
      '8',
      '--pin',
      '4',
    ];
    const dry = await env.ckpt(['prune', retentionDir, ...flags, '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout) as { policy: RetentionPolicy } & PruneSummary;
    assert.deepEqual(plan.deleted, []);
    assert.deepEqual(
      plan.remove.map((r) => r.step),
      [2, 10],
    );

    const run = (dryRun: boolean) =>
      env.client.workflow.execute('applyRetention', {
        taskQueue: env.taskQueues.control,
        workflowId: `retention-test-${dryRun ? 'dry' : 'apply'}-${Date.now()}`,
        args: [{ dir: retentionDir, policy: plan.policy, dryRun, settings: env.settings }],
        workflowExecutionTimeout: '2m',
      }) as Promise<PruneSummary>;

    const dryRun = await run(true);
    assert.deepEqual(dryRun.deleted, []);
    assert.deepEqual(await committedSteps(openStore(retentionDir)), [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);

    const applied = await run(false);
    assert.deepEqual(applied.keep, plan.keep);
    assert.deepEqual(applied.remove, plan.remove);
    assert.deepEqual(
      [...applied.deleted].sort((a, b) => a - b),
      plan.remove.map((r) => r.step).sort((a, b) => a - b),
    );
    assert.deepEqual(
      await committedSteps(openStore(retentionDir)),
      plan.keep.map((k) => k.step).sort((a, b) => a - b),
    );
  });
});

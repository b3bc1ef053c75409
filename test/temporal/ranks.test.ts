/**
 * Multi-rank pipelines on real workers against the real dev server: a segment runs as W rank activities
 * that meet through the workflow's rendezvous; a rank's worker killed mid-segment makes the whole group
 * retry from the last checkpoint; with a minimum world size below W, a group that cannot assemble shrinks.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { defaultPayloadConverter } from '@temporalio/common';
import { committedSteps, openStore } from '../../checkpoint';
import type { PipelineState } from '../../workflows/pipeline';
import {
  sha256,
  SMALL_MODEL,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
  type TestWorker,
} from '../helpers/temporal';

const T = temporalEnv('ranks');
let env: TemporalTestEnv;
const STEPS = 120;

interface RankActivity {
  rank: number;
  worker: string;
  step: number;
}

async function runningRanks(id: string): Promise<RankActivity[]> {
  const description = await env.client.workflow.getHandle(id).describe();
  return (description.raw.pendingActivities ?? [])
    .filter((a) => a.activityType?.name === 'trainRank' && a.lastWorkerIdentity)
    .map((a) => {
      const payload = a.heartbeatDetails?.payloads?.[0];
      const details = payload
        ? (defaultPayloadConverter.fromPayload(payload as never) as { rank?: number; step?: number })
        : {};
      return { rank: details.rank ?? -1, worker: a.lastWorkerIdentity ?? '', step: details.step ?? -1 };
    });
}

async function start(tag: string, extra: string[]): Promise<{ id: string; dir: string }> {
  const res = await env.ckpt([
    'pipeline',
    'start',
    '--root',
    env.dir,
    '--tag',
    tag,
    ...SMALL_MODEL,
    '--seed',
    '5',
    '--steps',
    String(STEPS),
    '--segment-steps',
    String(STEPS),
    '--save-every',
    '6',
    '--world-size',
    '2',
    ...extra,
  ]);
  assert.equal(res.code, 0, res.stderr);
  return { id: res.stdout.trim(), dir: join(env.dir, 'base_checkpoints', tag) };
}

/** Once both ranks train past step 4, SIGKILL the worker of rank 1. */
async function killRankOne(id: string, workers: TestWorker[]): Promise<TestWorker> {
  const ranks = await waitFor(
    'both ranks training past step 12',
    async () => {
      const r = await runningRanks(id);
      return r.length === 2 && r.every((a) => a.step >= 12) ? r : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 100 },
  );
  const victim = workers.find((w) => w.identity === ranks.find((a) => a.rank === 1)!.worker)!;
  assert.ok(victim, 'the worker of rank 1 is one of ours');
  await victim.kill();
  return victim;
}

before(async () => {
  env = await T.start();
  await env.startWorker('control');
});

describe('pipeline --world-size 2', () => {
  it('a rank worker killed mid-segment: the group retries from the last checkpoint and ends bitwise equal to ckpt train --nproc 2', async () => {
    const reference = env.ckpt([
      'train',
      '--root',
      join(env.dir, 'ref'),
      '--tag',
      'ref',
      ...SMALL_MODEL,
      '--seed',
      '5',
      '--steps',
      String(STEPS),
      '--save-every',
      '6',
      '--nproc',
      '2',
    ]);
    const [a, b] = await Promise.all([env.startWorker('train'), env.startWorker('train')]);
    const { id, dir } = await start('group', []);
    const victim = await killRankOne(id, [a, b]);
    const killedAt = Date.now();
    const lastCheckpoint = (await committedSteps(openStore(dir))).at(-1) ?? 0;
    // A replacement worker comes up (as a cluster would reschedule it); the group needs two slots again.
    const replacement = await env.startWorker('train');
    // Seen by the ranks' heartbeats (sent at most every 2.4 s), or, when the new generation is quicker than
    // that, by the pipeline having finished (its generation count is checked below).
    await waitFor(
      'a new generation training past the last checkpoint',
      async () => {
        const ranks = await runningRanks(id);
        if (ranks.length === 2 && ranks.every((r) => r.worker !== victim.identity && r.step > lastCheckpoint))
          return true;
        return (await env.client.workflow.getHandle(id).describe()).status.name === 'COMPLETED';
      },
      { timeoutMs: 180_000, intervalMs: 100 },
    );
    process.stderr.write(`W=2 kill-to-resume: ${((Date.now() - killedAt) / 1000).toFixed(1)} s\n`);
    const result = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(result.state, 'completed');
    assert.ok((result.group?.generation ?? 0) >= 2, 'the segment ran again as a new generation');
    const ref = await reference;
    assert.equal(ref.code, 0, ref.stderr);
    const refDir = join(env.dir, 'ref', 'base_checkpoints', 'ref');
    const pad = String(STEPS).padStart(6, '0');
    for (const file of [
      `model_${pad}.safetensors`,
      `optim_${pad}_rank0.safetensors`,
      `optim_${pad}_rank1.safetensors`,
    ]) {
      assert.equal(sha256(join(dir, file)), sha256(join(refDir, file)), file);
    }
    await replacement.stop();
    await Promise.all([a, b].filter((w) => w !== victim).map((w) => w.stop()));
  });

  it('--min-world-size 1: a worker killed and not replaced → the pipeline finishes on one rank and its status says so', async () => {
    const [a, b] = await Promise.all([env.startWorker('train'), env.startWorker('train')]);
    const { id, dir } = await start('shrink', ['--min-world-size', '1', '--shrink-after', '5s']);
    await killRankOne(id, [a, b]);
    const result = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(result.state, 'completed');
    assert.equal(result.step, STEPS);
    assert.equal(result.group?.worldSize, 1);
    assert.equal(result.group?.changes.length, 1);
    assert.match(result.group!.changes[0]!.reason, /only [01] of 2 ranks started within 5000 ms/);
    const status = await env.ckpt(['pipeline', 'status', id]);
    assert.match(status.stdout, /ranks\s+1 \(was 2 until step \d+/);
    const manifest = JSON.parse(
      require('node:fs').readFileSync(join(dir, `manifest_${String(STEPS).padStart(6, '0')}.json`), 'utf8'),
    );
    assert.equal(manifest.world_size, 1);
    assert.equal((await env.ckpt(['verify', dir])).code, 0);
  });
});

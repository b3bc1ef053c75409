/**
 * A pipeline whose checkpoints live on a real S3 server (s3://bucket/prefix root): the training worker is
 * killed mid-segment, another worker resumes from the last checkpoint committed on S3, and the final
 * weights are bitwise equal to an uninterrupted local run.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { committedSteps, configureS3, openStore } from '../../checkpoint';
import type { PipelineState } from '../../workflows/pipeline';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import {
  pendingActivities,
  sha256,
  SMALL_MODEL,
  temporalEnv,
  waitFor,
  type TemporalTestEnv,
} from '../helpers/temporal';

const extraEnv: NodeJS.ProcessEnv = {};
const T = temporalEnv('s3', { env: extraEnv });
let env: TemporalTestEnv;
let s3: S3TestServer;
const STEPS = 400;

before(async () => {
  s3 = await startS3Server();
  Object.assign(extraEnv, s3.env(), { CKPT_ALLOWED_ROOTS: `${tmpdir()},s3://${s3.bucket}` });
  configureS3(s3.options());
  env = await T.start();
});
after(async () => {
  await s3?.stop();
});

describe('pipeline on an s3:// root', () => {
  it('a worker killed mid-segment resumes from the checkpoint on S3 and ends bitwise equal to an uninterrupted run', async () => {
    const root = `s3://${s3.bucket}/runs`;
    const reference = env.ckpt([
      'train',
      '--root',
      join(env.dir, 'ref'),
      '--tag',
      'ref',
      ...SMALL_MODEL,
      '--seed',
      '9',
      '--steps',
      String(STEPS),
      '--save-every',
      '10',
    ]);
    const [, first] = await Promise.all([env.startWorker('control'), env.startWorker('train')]);
    const res = await env.ckpt([
      'pipeline',
      'start',
      '--root',
      root,
      '--tag',
      's3run',
      ...SMALL_MODEL,
      '--seed',
      '9',
      '--steps',
      String(STEPS),
      '--segment-steps',
      String(STEPS),
      '--save-every',
      '10',
    ]);
    assert.equal(res.code, 0, res.stderr);
    const id = res.stdout.trim();
    const dir = `${root}/base_checkpoints/s3run`;
    // Past step 20 by its heartbeat, and a checkpoint committed on S3 (an asynchronous save commits a
    // moment after the step that took it).
    await waitFor(
      'the segment past step 20 with a checkpoint on S3',
      async () => {
        const seg = (await pendingActivities(env.client, id)).find((a) => a.activityType === 'trainSegment');
        return (seg?.heartbeatStep ?? -1) >= 20 && ((await committedSteps(openStore(dir))).at(-1) ?? 0) >= 10;
      },
      { timeoutMs: 120_000, intervalMs: 100 },
    );
    await first.kill();
    const lastCommitted = (await committedSteps(openStore(dir))).at(-1);
    assert.ok(
      lastCommitted !== undefined && lastCommitted >= 10,
      `a checkpoint was committed on S3 before the kill (${lastCommitted})`,
    );
    await env.startWorker('train');
    const result = (await env.client.workflow.getHandle(id).result()) as PipelineState;
    assert.equal(result.state, 'completed');
    assert.ok(result.retries >= 1, 'the segment was retried');
    const ref = await reference;
    assert.equal(ref.code, 0, ref.stderr);
    const store = openStore(dir);
    const pad = String(STEPS).padStart(6, '0');
    for (const file of [`model_${pad}.safetensors`, `optim_${pad}_rank0.safetensors`]) {
      const remote = createHash('sha256')
        .update(await store.read(file))
        .digest('hex');
      assert.equal(remote, sha256(join(env.dir, 'ref', 'base_checkpoints', 'ref', file)), file);
    }
    assert.equal((await env.ckpt(['verify', dir])).code, 0);
  });
});

/**
 * What an operator relies on when anyone with access to the namespace can start pipelines, on a real dev
 * server with a real `ckpt worker`: a pipeline whose directory is outside the workers' allowed roots
 * fails for good, naming the directory and the roots, and nothing is created there.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, TemporalFailure } from '@temporalio/common';
import { temporalEnv, type TemporalTestEnv } from '../helpers/temporal';

const T = temporalEnv('security');
let env: TemporalTestEnv;
let allowed: string;

before(async () => {
  env = await T.start();
  allowed = join(env.dir, 'allowed');
  await env.startWorker('all', { env: { CKPT_ALLOWED_ROOTS: allowed } });
});

/** `ckpt pipeline start` of a --noop pipeline (orchestration only) on `root`; its id on stdout. */
const startPipeline = (root: string, tag: string, ...flags: string[]) =>
  env.ckpt(['pipeline', 'start', `--root=${root}`, `--tag=${tag}`, '--steps=4', '--noop', ...flags], {
    timeoutMs: 60_000,
  });

describe('allowed roots on the workers', () => {
  it('a pipeline under the allowed root completes', async () => {
    const run = await startPipeline(allowed, 'inside', '--segment-steps=2', '--wait');
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /completed\s+step 4\/4/);
  });

  it('a pipeline whose directory is outside fails for good, naming it and the roots, and creates nothing', async () => {
    const outside = join(env.dir, 'elsewhere');
    const run = await startPipeline(outside, 'escape');
    assert.equal(run.code, 0, run.stderr);
    const failure = await env.client.workflow
      .getHandle(run.stdout.trim())
      .result()
      .then(
        () => assert.fail('the pipeline completed'),
        (err: unknown) => err,
      );
    assert.ok(failure instanceof WorkflowFailedError, String(failure));
    let cause: unknown = failure.cause;
    while (cause instanceof TemporalFailure && !(cause instanceof ApplicationFailure)) cause = cause.cause;
    assert.ok(cause instanceof ApplicationFailure, String(cause));
    assert.equal(cause.type, 'OutsideAllowedRootsError');
    assert.equal(cause.nonRetryable, true);
    assert.ok(cause.message.includes(join(outside, 'base_checkpoints', 'escape')), cause.message);
    assert.ok(cause.message.includes(`outside the allowed roots (${allowed})`), cause.message);
    assert.equal(existsSync(outside), false);
  });
});

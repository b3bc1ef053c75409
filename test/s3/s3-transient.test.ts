/**
 * An S3 server that is down (killed, then back) gives a TransientStoreError, exit code 1, which activities
 * retry; not a StoreError with exit 2 (bad input), which fails the pipeline for good. Found by the pipeline
 * fault campaign (npm run fault:pipeline): a segment retried while the server was still down listed the
 * directory, got ECONNRESET, exited 2, and the pipeline failed instead of retrying.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  committedSteps,
  configureS3,
  saveCheckpoint,
  StoreError,
  TransientStoreError,
} from '../../checkpoint';
import { isTransient } from '../../checkpoint/s3-settings';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';

let server: S3TestServer;
before(async () => {
  server = await startS3Server();
  // No SDK-level retries, so the test sees the first failure quickly.
  configureS3(server.options({ maxAttempts: 1 }));
});
after(async () => {
  configureS3();
  await server?.stop();
});

describe('S3 server down', () => {
  it('is a TransientStoreError (exit 1) in the library and in the CLI, and clears when the server is back', async () => {
    const dir = `s3://${server.bucket}/transient/d1`;
    await saveCheckpoint(dir, 10, {
      model: tinyModel(1),
      optimizer: tinyOptimizer(1),
      meta: tinyMeta({ seed: 1 }),
    });
    await server.kill();
    try {
      const err = await committedSteps(dir).then(
        () => assert.fail('listing a stopped server succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TransientStoreError, `got ${String(err)}`);
      assert.equal(err.exitCode, 1);
      assert.match(err.message, /cannot list s3:\/\//);
      const cli = await ckptAsync(['last-step', dir], server.env());
      assert.equal(cli.code, 1, `ckpt last-step with the server down: ${cli.stderr}`);
      assert.match(cli.stderr, /ckpt: error: cannot /);
    } finally {
      await server.restart();
    }
    // The error clears once the server is back. Only a server that keeps its data (versitygw) still has
    // the step; moto keeps objects in memory, so after the restart its bucket is new and empty.
    assert.deepEqual(await committedSteps(dir), server.persistent ? [10] : []);
  });

  it('classifies network codes, 5xx and throttling as transient, and bad requests as not', () => {
    const sdk = (name: string, status: number) =>
      Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
    assert.equal(isTransient(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })), true);
    assert.equal(
      isTransient(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' })),
      true,
    );
    assert.equal(isTransient(sdk('InternalError', 500)), true);
    assert.equal(isTransient(sdk('SlowDown', 503)), true);
    assert.equal(isTransient(sdk('TooManyRequests', 429)), true);
    assert.equal(isTransient(sdk('NoSuchBucket', 404)), false);
    assert.equal(isTransient(sdk('AccessDenied', 403)), false);
    assert.equal(isTransient(sdk('InvalidArgument', 400)), false);
    assert.ok(
      new TransientStoreError('x') instanceof StoreError,
      'callers that catch StoreError still catch it',
    );
  });
});

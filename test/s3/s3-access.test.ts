/**
 * A request the server refuses (403: wrong credentials, a bucket policy) is AccessDeniedError: exit 2, not
 * retried, naming the key and the bucket. A HEAD's 403 has no body, so the SDK can only call it
 * "UnknownError"; it must read as access denied all the same. Against the real server with a wrong secret
 * (moto accepts any credentials, so there these tests are skipped).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  AccessDeniedError,
  configureS3,
  isRetryable,
  manifestFile,
  S3Connection,
  S3Store,
  saveCheckpoint,
  StoreError,
} from '../../checkpoint';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

let server: S3TestServer;
let refused: S3Store;
before(async () => {
  server = await startS3Server();
  configureS3(server.options());
  await saveCheckpoint(`s3://${server.bucket}/access/d1`, 10, { model: tinyModel(1), meta: tinyMeta() });
  const wrong = { accessKeyId: server.accessKeyId, secretAccessKey: `${server.secretAccessKey}x` };
  refused = new S3Store(
    `s3://${server.bucket}/access/d1`,
    new S3Connection(server.options({ credentials: wrong })),
  );
});
after(async () => {
  refused?.connection.destroy();
  configureS3();
  await server?.stop();
});

function assertDenied(err: unknown, key: string, bucket: string): asserts err is AccessDeniedError {
  assert.ok(err instanceof AccessDeniedError, `got ${String(err)}`);
  assert.ok(err instanceof StoreError, 'callers that catch StoreError still catch it');
  assert.equal(err.exitCode, 2);
  assert.equal(isRetryable(err), false);
  assert.equal(err.code !== undefined && err.code !== 'Unknown', true, `code ${err.code}`);
  assert.ok(err.message.includes(`access denied to key "${key}" in bucket "${bucket}"`), err.message);
  assert.doesNotMatch(err.message, /UnknownError/);
}

describe('access refused by the server', () => {
  it('a HEAD refused with a bare 403 is AccessDeniedError naming the key and bucket', async (t) => {
    if (!server.checksCredentials) return t.skip(`${server.kind} accepts any credentials`);
    const err = await refused.stat(manifestFile(10)).then(
      () => assert.fail('stat with a wrong secret succeeded'),
      (e: unknown) => e,
    );
    assertDenied(err, `access/d1/${manifestFile(10)}`, server.bucket);
    assert.match(err.message, /HTTP 403, no detail/);
    assert.equal(err.file, manifestFile(10));
  });

  it('a list or read refused with a coded 403 is the same error', async (t) => {
    if (!server.checksCredentials) return t.skip(`${server.kind} accepts any credentials`);
    for (const work of [() => refused.list(), () => refused.read(manifestFile(10))]) {
      const err = await work().then(
        () => assert.fail('a request with a wrong secret succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof AccessDeniedError, String(err));
      assert.match(
        err.message,
        /access denied to (key|prefix) "access\/d1\/.*" in bucket .*\(SignatureDoesNotMatch\)/,
      );
    }
  });

  it('the CLI exits 2 with one line that says access denied, not UnknownError', async (t) => {
    if (!server.checksCredentials) return t.skip(`${server.kind} accepts any credentials`);
    const dir = `s3://${server.bucket}/access/d1`;
    // copy --step asks whether the step is committed first: a HEAD of its manifest.
    const run = await ckptAsync(['copy', dir, tempDir(), '--step', '10'], {
      ...server.env(),
      AWS_SECRET_ACCESS_KEY: `${server.secretAccessKey}x`,
    });
    assert.equal(run.code, 2, run.stderr);
    const errors = run.stderr.split('\n').filter((l) => l.startsWith('ckpt: error:'));
    assert.equal(errors.length, 1, run.stderr);
    assert.match(
      errors[0]!,
      new RegExp(`access denied to key "access/d1/${manifestFile(10)}" in bucket "${server.bucket}"`),
    );
    assert.doesNotMatch(run.stderr, /UnknownError|--debug/);
  });
});

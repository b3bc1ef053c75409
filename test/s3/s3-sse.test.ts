/**
 * Server-side encryption on S3 (CKPT_S3_SSE, CKPT_S3_SSE_KMS_KEY_ID): every object a `ckpt` process
 * writes asks for it, whether a training child saves checkpoints (through its save thread) or `ckpt copy`
 * uploads them, and whether an object goes up in one PUT or as a multipart upload. Seen from outside the
 * client: the requests pass through a recording proxy on their way to the real test server. The test
 * servers do not enforce a bucket policy on the encryption header (versitygw ignores the condition, moto
 * refuses every PUT under such a policy), so the headers are what is checked; where the server keeps the
 * encryption settings (moto), they are read back too.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { S3Connection, saveCheckpoint, manifestFile, modelFile } from '../../checkpoint';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startRecordingProxy, type RecordedRequest, type RecordingProxy } from '../helpers/recording-proxy';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { SMALL_MODEL } from '../helpers/temporal';
import { tempDir } from '../helpers/tmp';

let server: S3TestServer;
let proxy: RecordingProxy;
before(async () => {
  server = await startS3Server();
  proxy = await startRecordingProxy(server.endpoint);
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

const env = (extra: NodeJS.ProcessEnv) => ({ ...server.env(), AWS_ENDPOINT_URL: proxy.endpoint, ...extra });

/** Requests that create an object: a PUT that is not a part of a multipart upload, or a multipart create. */
function objectWrites(prefix: string): RecordedRequest[] {
  return proxy.requests.filter((r) => {
    const url = new URL(r.path, 'http://x');
    if (!url.pathname.startsWith(`/${server.bucket}/${prefix}/`)) return false;
    if (r.method === 'PUT') return !url.searchParams.has('partNumber');
    return r.method === 'POST' && url.searchParams.has('uploads');
  });
}

async function storedEncryption(key: string) {
  const connection = new S3Connection(server.options());
  try {
    return await connection.client.send(new HeadObjectCommand({ Bucket: server.bucket, Key: key }));
  } finally {
    connection.destroy();
  }
}

describe('S3 server-side encryption', () => {
  it('a training child asks for SSE-S3 (AES256) on every object it writes', async () => {
    const root = `s3://${server.bucket}/train`;
    const run = await ckptAsync(
      ['train', '--root', root, '--tag', 't', ...SMALL_MODEL, '--steps', '4', '--save-every', '2'],
      env({ CKPT_S3_SSE: 'AES256' }),
    );
    assert.equal(run.code, 0, run.stderr);
    const writes = objectWrites('train');
    // Two checkpoints: model, optimizer, meta and manifest each.
    assert.ok(writes.length >= 8, `only ${writes.length} writes seen`);
    for (const w of writes) {
      assert.equal(w.headers['x-amz-server-side-encryption'], 'AES256', `${w.method} ${w.path}`);
      assert.equal(w.headers['x-amz-server-side-encryption-aws-kms-key-id'], undefined);
    }
    if (server.kind === 'moto') {
      const head = await storedEncryption(`train/base_checkpoints/t/${manifestFile(4)}`);
      assert.equal(head.ServerSideEncryption, 'AES256');
    }
  });

  it('ckpt copy asks for SSE-KMS with the key id, on single PUTs and multipart uploads alike', async () => {
    const src = tempDir();
    // ~35 MB of model tensors: more than one 16 MiB part, so the model goes up as a multipart upload.
    await saveCheckpoint(src, 10, {
      model: tinyModel(1, 1_100_000),
      optimizer: tinyOptimizer(1),
      meta: tinyMeta(),
    });
    const run = await ckptAsync(
      ['copy', src, `s3://${server.bucket}/copy`],
      env({ CKPT_S3_SSE_KMS_KEY_ID: 'key-1' }),
    );
    assert.equal(run.code, 0, run.stderr);
    const writes = objectWrites('copy');
    assert.ok(
      writes.some((w) => w.method === 'POST' && w.path.includes(modelFile(10))),
      'the model went up as a multipart upload',
    );
    assert.ok(writes.some((w) => w.method === 'PUT' && w.path.includes(manifestFile(10))));
    for (const w of writes) {
      assert.equal(w.headers['x-amz-server-side-encryption'], 'aws:kms', `${w.method} ${w.path}`);
      assert.equal(
        w.headers['x-amz-server-side-encryption-aws-kms-key-id'],
        'key-1',
        `${w.method} ${w.path}`,
      );
    }
    if (server.kind === 'moto') {
      const head = await storedEncryption(`copy/${modelFile(10)}`);
      assert.equal(head.ServerSideEncryption, 'aws:kms');
      assert.equal(head.SSEKMSKeyId, 'key-1');
    }
  });

  it('without CKPT_S3_SSE no encryption is asked for (the bucket default applies)', async () => {
    const src = tempDir();
    await saveCheckpoint(src, 1, { model: tinyModel(1), optimizer: tinyOptimizer(1), meta: tinyMeta() });
    const run = await ckptAsync(['copy', src, `s3://${server.bucket}/plain`], env({}));
    assert.equal(run.code, 0, run.stderr);
    const writes = objectWrites('plain');
    assert.ok(writes.length >= 4);
    for (const w of writes) assert.equal(w.headers['x-amz-server-side-encryption'], undefined);
  });
});

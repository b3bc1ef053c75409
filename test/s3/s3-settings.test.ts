/**
 * S3 store pieces that need no server: location parsing, settings from the environment, what the store
 * sends (SSE, conditional writes, checksums), bounded memory and concurrency of multipart uploads, and
 * that credentials stay out of every printable form. A fake client records the commands.
 */
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import type { S3Client } from '@aws-sdk/client-s3';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  openStore,
  parseS3Location,
  S3Connection,
  S3Store,
  StoreError,
  type S3StoreOptions,
} from '../../checkpoint';
import { rechunk } from '../../checkpoint/s3-upload';
import { loadS3Config } from '../../temporal.config';

interface Sent {
  name: string;
  input: Record<string, unknown>;
}

/** Answers like a server that has no objects; UploadPart takes `partDelayMs` and counts concurrency. */
function fakeClient(partDelayMs = 0) {
  const sent: Sent[] = [];
  const stats = { inflight: 0, maxInflight: 0 };
  const client = {
    async send(command: { input: Record<string, unknown>; constructor: { name: string } }) {
      const name = command.constructor.name.replace(/Command$/, '');
      sent.push({ name, input: command.input });
      switch (name) {
        case 'PutObject':
          return { ETag: '"e"' };
        case 'CreateMultipartUpload':
          return { UploadId: 'u1' };
        case 'UploadPart': {
          stats.inflight++;
          stats.maxInflight = Math.max(stats.maxInflight, stats.inflight);
          await new Promise((r) => setTimeout(r, partDelayMs));
          stats.inflight--;
          return { ETag: `"p${command.input.PartNumber}"` };
        }
        case 'CompleteMultipartUpload':
          return { ETag: '"m"' };
        case 'HeadObject': {
          // The writer tag read back is the one the last put of the key sent: that put won.
          const put = [...sent]
            .reverse()
            .find(
              (s) =>
                (s.name === 'PutObject' || s.name === 'CreateMultipartUpload') &&
                s.input.Key === command.input.Key,
            );
          if (!put)
            throw Object.assign(new Error('NotFound'), {
              name: 'NotFound',
              $metadata: { httpStatusCode: 404 },
            });
          return { ContentLength: 1, Metadata: put.input.Metadata };
        }
        default:
          return {};
      }
    },
    destroy() {},
  };
  return { client: client as unknown as S3Client, sent, stats };
}

function storeWith(options: S3StoreOptions, client: S3Client): S3Store {
  return new S3Store('s3://bucket-a/runs/x', new S3Connection({ ...options, client, confirmExclusiveMs: 0 }));
}

describe('s3:// locations', () => {
  it('parse into bucket and prefix, and openStore opens an S3Store', () => {
    assert.deepEqual(parseS3Location('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Location('s3://my-bucket/a/b/'), { bucket: 'my-bucket', prefix: 'a/b' });
    const store = openStore('s3://my-bucket/base_checkpoints');
    assert.ok(store instanceof S3Store);
    assert.equal(store.location, 's3://my-bucket/base_checkpoints');
    assert.equal(store.sub('d12').location, 's3://my-bucket/base_checkpoints/d12');
  });

  it('reject bad bucket names, traversal and empty segments', () => {
    for (const bad of [
      's3://',
      's3://ab',
      's3://Upper/x',
      's3://b_b/x',
      's3://bucket/../x',
      's3://bucket/a//b',
      's3://bucket/./a',
    ]) {
      assert.throws(() => parseS3Location(bad), InvalidArgumentError, bad);
    }
    assert.throws(() => new S3Store('s3://bucket/a').sub('..'), InvalidArgumentError);
  });
});

describe('loadS3Config', () => {
  it('reads CKPT_S3_* first, then the standard AWS variables, with us-east-1 as the last resort', () => {
    assert.deepEqual(loadS3Config({}), { region: 'us-east-1', requestTimeoutMs: 30_000 });
    assert.deepEqual(loadS3Config({ AWS_ENDPOINT_URL: 'http://h:1', AWS_DEFAULT_REGION: 'eu-west-1' }), {
      endpoint: 'http://h:1',
      region: 'eu-west-1',
      requestTimeoutMs: 30_000,
    });
    const both = loadS3Config({
      CKPT_S3_ENDPOINT: 'https://s3.example.com',
      AWS_ENDPOINT_URL_S3: 'http://other:1',
      CKPT_S3_REGION: 'ap-south-1',
      AWS_REGION: 'us-west-2',
      CKPT_S3_FORCE_PATH_STYLE: '0',
    });
    assert.deepEqual(both, {
      endpoint: 'https://s3.example.com',
      region: 'ap-south-1',
      forcePathStyle: false,
      requestTimeoutMs: 30_000,
    });
    assert.equal(
      loadS3Config({ AWS_ENDPOINT_URL_S3: 'http://a:1', AWS_ENDPOINT_URL: 'http://b:1' }).endpoint,
      'http://a:1',
    );
  });

  it('reads server-side encryption and rejects bad values', () => {
    assert.deepEqual(loadS3Config({ CKPT_S3_SSE: 'AES256' }).sse, { serverSideEncryption: 'AES256' });
    assert.deepEqual(loadS3Config({ CKPT_S3_SSE_KMS_KEY_ID: 'key-1' }).sse, {
      serverSideEncryption: 'aws:kms',
      kmsKeyId: 'key-1',
    });
    assert.throws(() => loadS3Config({ CKPT_S3_SSE: 'rot13' }), InvalidArgumentError);
    assert.throws(
      () => loadS3Config({ CKPT_S3_SSE: 'AES256', CKPT_S3_SSE_KMS_KEY_ID: 'k' }),
      InvalidArgumentError,
    );
    assert.throws(() => loadS3Config({ CKPT_S3_ENDPOINT: 'localhost:9000' }), InvalidArgumentError);
    assert.throws(() => loadS3Config({ CKPT_S3_FORCE_PATH_STYLE: 'maybe' }), InvalidArgumentError);
  });
});

describe('what the store sends', () => {
  it('an exclusive small put: one PUT with If-None-Match, a writer tag, SSE and its CRC-32', async () => {
    const { client, sent } = fakeClient();
    const store = storeWith({ sse: { serverSideEncryption: 'aws:kms', kmsKeyId: 'kms-1' } }, client);
    const body = Buffer.from('hello');
    const result = await store.put('d1/manifest_000001.json', body, { exclusive: true });
    assert.equal(result.crc32, crc32(body).toString(16).padStart(8, '0'));
    const put = sent.find((s) => s.name === 'PutObject')!.input;
    assert.equal(put.Bucket, 'bucket-a');
    assert.equal(put.Key, 'runs/x/d1/manifest_000001.json');
    assert.equal(put.IfNoneMatch, '*');
    assert.equal(put.ServerSideEncryption, 'aws:kms');
    assert.equal(put.SSEKMSKeyId, 'kms-1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    assert.equal(put.ChecksumCRC32, crc.toString('base64'));
    assert.match(String((put.Metadata as Record<string, string>)['ckpt-writer']), /^[0-9a-f]{24}$/);
    // HEAD first (refuse early), the conditional PUT, then the writer tag read back.
    assert.deepEqual(
      sent.map((s) => s.name),
      ['HeadObject', 'PutObject', 'HeadObject'],
    );
  });

  it('an exclusive put of an existing key is refused before the source is read', async () => {
    const { client, sent } = fakeClient();
    const store = storeWith({}, client);
    await store.put('k', Buffer.from('first'));
    let pulled = false;
    async function* source() {
      pulled = true;
      yield Buffer.from('second');
    }
    await assert.rejects(store.put('k', source(), { exclusive: true }), AlreadyExistsError);
    assert.equal(pulled, false);
    assert.deepEqual(
      sent.map((s) => s.name),
      ['PutObject', 'HeadObject'],
    );
  });

  it('a 412 answering the SDK retry of our own landed write is a success (the writer tag is ours)', async () => {
    const { client, sent } = fakeClient();
    const retried = {
      async send(cmd: { constructor: { name: string } }) {
        const out = await client.send(cmd as never);
        if (cmd.constructor.name === 'PutObjectCommand') {
          throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), {
            name: 'PreconditionFailed',
            $metadata: { httpStatusCode: 412 },
          });
        }
        return out;
      },
      destroy() {},
    } as unknown as S3Client;
    const result = await storeWith({}, retried).put('m', Buffer.from('x'), { exclusive: true });
    assert.equal(result.bytes, 1);
    assert.deepEqual(
      sent.map((s) => s.name),
      ['HeadObject', 'PutObject', 'HeadObject'],
    );
  });

  it('a plain put has no condition and no read-back', async () => {
    const { client, sent } = fakeClient();
    await storeWith({}, client).put('k', Buffer.from('x'));
    assert.deepEqual(
      sent.map((s) => s.name),
      ['PutObject'],
    );
    assert.equal(sent[0]!.input.IfNoneMatch, undefined);
    assert.equal(sent[0]!.input.ServerSideEncryption, undefined);
  });

  it('a large put is a multipart upload: bounded parallel parts, SSE on create, condition on complete', async () => {
    const { client, sent, stats } = fakeClient(20);
    const partSize = 5 << 20;
    const store = storeWith(
      { partSize, uploadConcurrency: 3, sse: { serverSideEncryption: 'AES256' } },
      client,
    );
    const total = 8 * partSize + 12345;
    let pulled = 0;
    let maxAhead = 0;
    let crc = 0;
    async function* source() {
      for (let off = 0; off < total; off += 1_000_003) {
        const chunk = Buffer.alloc(Math.min(1_000_003, total - off), off % 251);
        crc = crc32(chunk, crc);
        pulled += chunk.byteLength;
        const done = sent.filter((s) => s.name === 'UploadPart').length - stats.inflight;
        maxAhead = Math.max(maxAhead, pulled - done * partSize);
        yield chunk;
      }
    }
    const result = await store.put('model.safetensors', source(), { exclusive: true });
    assert.equal(result.bytes, total);
    assert.equal(result.crc32, crc.toString(16).padStart(8, '0'));
    const names = sent.map((s) => s.name).filter((n) => n !== 'HeadObject');
    assert.equal(names[0], 'CreateMultipartUpload');
    assert.equal(names.filter((n) => n === 'UploadPart').length, 9);
    assert.ok(names.includes('CompleteMultipartUpload'));
    const create = sent.find((s) => s.name === 'CreateMultipartUpload')!.input;
    assert.equal(create.ServerSideEncryption, 'AES256');
    assert.equal(create.ChecksumAlgorithm, 'SHA256');
    const complete = sent.find((s) => s.name === 'CompleteMultipartUpload')!.input;
    assert.equal(complete.IfNoneMatch, '*');
    const parts = (complete.MultipartUpload as { Parts: Array<{ PartNumber: number }> }).Parts;
    assert.deepEqual(
      parts.map((p) => p.PartNumber),
      [1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.ok(stats.maxInflight <= 3, `at most 3 parts in flight, saw ${stats.maxInflight}`);
    // Read-ahead: the parts in flight, the part being filled, and one source chunk.
    assert.ok(maxAhead <= 5 * partSize + 1_000_003, `read ahead ${maxAhead} bytes`);
  });

  it('a failed part aborts the multipart upload and is a (transient) StoreError naming the object', async () => {
    const { client, sent } = fakeClient();
    const failing = {
      send: async (cmd: { constructor: { name: string } }) => {
        if (
          cmd.constructor.name === 'UploadPartCommand' &&
          sent.filter((s) => s.name === 'UploadPart').length > 1
        ) {
          await client.send(cmd as never);
          throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        }
        return client.send(cmd as never);
      },
      destroy() {},
    } as unknown as S3Client;
    const store = storeWith({ partSize: 5 << 20 }, failing);
    await assert.rejects(
      store.put('big.bin', Buffer.alloc(11 << 20)),
      (err: Error & { code?: string; exitCode?: number }) => {
        assert.ok(err instanceof StoreError);
        // A dropped connection may pass: exit 1, which activities retry.
        assert.equal(err.name, 'TransientStoreError');
        assert.equal(err.exitCode, 1);
        assert.match(err.message, /s3:\/\/bucket-a\/runs\/x\/big\.bin/);
        assert.equal(err.code, 'ECONNRESET');
        return true;
      },
    );
    assert.ok(sent.some((s) => s.name === 'AbortMultipartUpload'));
    assert.ok(!sent.some((s) => s.name === 'CompleteMultipartUpload'));
  });
});

describe('rechunk', () => {
  it('cuts any chunking into parts of the asked size and sees every byte once, in order', async () => {
    const seen: number[] = [];
    const chunks = [Buffer.from([1, 2, 3]), Buffer.from([]), Buffer.from([4, 5, 6, 7, 8]), Buffer.from([9])];
    const parts: number[][] = [];
    for await (const p of rechunk(
      chunks,
      () => 4,
      (c) => seen.push(...c),
    ))
      parts.push([...p]);
    assert.deepEqual(parts, [[1, 2, 3, 4], [5, 6, 7, 8], [9]]);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const empty: number[][] = [];
    for await (const p of rechunk(
      [],
      () => 4,
      () => undefined,
    ))
      empty.push([...p]);
    assert.deepEqual(empty, [[]]);
  });
});

describe('credentials stay secret', () => {
  it('are in no JSON or inspect output of a store or its connection', () => {
    const secret = 'SECRET-should-never-print-0123456789';
    const store = new S3Store('s3://bucket-b/p', {
      endpoint: 'http://127.0.0.1:1',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: secret },
    });
    for (const text of [
      JSON.stringify(store),
      inspect(store, { depth: 10 }),
      JSON.stringify(store.connection),
      inspect(store.connection, { depth: 10 }),
    ]) {
      assert.ok(!text.includes(secret), text);
      assert.ok(!text.includes('AKIDEXAMPLE'), text);
    }
  });
});

/**
 * The checkpoint layer on a real S3 server (versitygw, see test/helpers/s3-server.ts): the Store contract,
 * save/load/list/prune/verify/gc on s3:// locations, racing writers, long listings, multipart uploads, and
 * the server killed mid-upload.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import {
  AlreadyCommittedError,
  AlreadyExistsError,
  committedSteps,
  configureS3,
  findLastStep,
  garbageCollect,
  listCheckpoints,
  loadCheckpoint,
  manifestFile,
  modelFile,
  openStore,
  pruneCheckpoints,
  S3Connection,
  S3Store,
  saveCheckpoint,
  StoreError,
  verifyCheckpoint,
  type ByteSource,
  type Location,
  type PutOptions,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';

let server: S3TestServer;
before(async () => {
  server = await startS3Server();
  configureS3(server.options());
});
after(async () => {
  configureS3();
  await server?.stop();
});

const url = (prefix: string) => `s3://${server.bucket}/${prefix}`;
const save = (dir: Location, step: number, seed = 1, size = 8) =>
  saveCheckpoint(dir, step, {
    model: tinyModel(seed, size),
    optimizer: tinyOptimizer(seed),
    meta: tinyMeta({ seed }),
  });

describe('S3Store: the Store contract', () => {
  it('put/read/readRange/stream/stat/list/listDirs/delete/sub behave like the local store', async () => {
    const store = server.store('contract');
    const body = Buffer.from('0123456789');
    const put = await store.put('a/file.bin', body);
    assert.deepEqual(put, { bytes: 10, crc32: crc32(body).toString(16).padStart(8, '0') });
    assert.deepEqual(await store.read('a/file.bin'), body);
    assert.deepEqual(await store.readRange('a/file.bin', 3, 4), Buffer.from('3456'));
    assert.deepEqual(await store.readRange('a/file.bin', 8, 10), Buffer.from('89'), 'short read at the end');
    assert.deepEqual(await store.readRange('a/file.bin', 20, 5), Buffer.alloc(0));
    const streamed: Buffer[] = [];
    for await (const c of store.stream('a/file.bin', 4)) streamed.push(Buffer.from(c));
    assert.deepEqual(Buffer.concat(streamed), Buffer.from('456789'));
    const st = await store.stat('a/file.bin');
    assert.equal(st?.bytes, 10);
    assert.ok(Math.abs(st!.mtimeMs - Date.now()) < 60_000, 'mtime from LastModified');
    assert.equal(await store.stat('a/nope'), null);
    assert.equal(await store.exists('a/nope'), false);
    assert.deepEqual(await store.put('empty', Buffer.alloc(0)), {
      bytes: 0,
      crc32: '00000000',
    });
    assert.equal((await store.read('empty')).length, 0);
    for await (const c of store.stream('empty')) assert.fail(`unexpected chunk of ${c.byteLength} bytes`);
    await store.delete('empty');
    await store.put('top.json', Buffer.from('{}'));
    assert.deepEqual(
      (await store.list()).map((e) => e.key),
      ['top.json'],
    );
    assert.deepEqual(
      (await store.list('a')).map((e) => e.key),
      ['a/file.bin'],
    );
    assert.deepEqual(await store.listDirs(), ['a']);
    assert.deepEqual(
      (await store.sub('a').list()).map((e) => e.key),
      ['file.bin'],
    );
    await assert.rejects(
      store.read('a/nope'),
      (err: StoreError) => err instanceof StoreError && err.code === 'NoSuchKey',
    );
    await store.delete('a/file.bin');
    await store.delete('a/file.bin'); // a missing object is not an error
    assert.deepEqual(await store.listDirs(), []);
  });

  it('an exclusive put never replaces an object', async () => {
    const store = server.store('exclusive');
    await store.put('k', Buffer.from('first'), { exclusive: true });
    await assert.rejects(store.put('k', Buffer.from('second'), { exclusive: true }), AlreadyExistsError);
    assert.equal((await store.read('k')).toString(), 'first');
    await store.put('k', Buffer.from('third'));
    assert.equal((await store.read('k')).toString(), 'third');
  });

  it('racing exclusive puts of one key: exactly one writer wins, every time', async () => {
    // versitygw checks If-None-Match before it writes, so overlapping requests can both get 200; the
    // writer-tag read-back (s3-upload.ts) must still leave exactly one winner.
    const writers = [0, 1, 2].map(() => server.store('race', {}));
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled(
        writers.map((w, i) =>
          w.put(`key-${round}`, Buffer.from(`writer ${i} `.repeat(50)), { exclusive: true }),
        ),
      );
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1, `round ${round}: ${results.map((r) => r.status).join(', ')}`);
      for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof AlreadyExistsError);
    }
  });

  it('lists more than 1,000 objects (pagination)', async () => {
    const store = server.store('many');
    const keys = Array.from({ length: 1100 }, (_, i) => `f${String(i).padStart(5, '0')}.json`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((k) => store.put(k, Buffer.from(k))));
    }
    const listed = await store.list();
    assert.equal(listed.length, 1100);
    assert.deepEqual(
      listed.map((e) => e.key),
      keys,
    );
  });

  it('a multipart upload (> part size) round-trips with the right crc32, streamed by parallel ranges', async () => {
    const store = server.store('multipart', { partSize: 5 << 20, rangeSize: 2 << 20 });
    const data = randomBytes(12 * 1024 * 1024 + 4321);
    async function* source() {
      for (let off = 0; off < data.length; off += 777_777) yield data.subarray(off, off + 777_777);
    }
    const put = await store.put('model.safetensors', source(), { exclusive: true });
    assert.equal(put.bytes, data.length);
    assert.equal(put.crc32, crc32(data).toString(16).padStart(8, '0'));
    assert.equal((await store.stat('model.safetensors'))?.bytes, data.length);
    const got: Buffer[] = [];
    for await (const c of store.stream('model.safetensors')) got.push(Buffer.from(c));
    assert.ok(Buffer.concat(got).equals(data), 'streamed bytes equal');
    const tail: Buffer[] = [];
    for await (const c of store.stream('model.safetensors', 7_000_001)) tail.push(Buffer.from(c));
    assert.ok(Buffer.concat(tail).equals(data.subarray(7_000_001)), 'stream from an offset');
    const edge = (5 << 20) - 10;
    assert.ok((await store.readRange('model.safetensors', edge, 20)).equals(data.subarray(edge, edge + 20)));

    // A refused exclusive multipart upload is aborted: no parts left behind.
    await assert.rejects(store.put('model.safetensors', source(), { exclusive: true }), AlreadyExistsError);
    const uploads = await store.connection.client.send(
      new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: 'multipart/' }),
    );
    assert.deepEqual(uploads.Uploads ?? [], []);
  });

  it('a missing bucket is a clear StoreError naming the bucket', async () => {
    const store = new S3Store('s3://no-such-bucket-here/x', server.options());
    for (const op of [() => store.list(), () => store.listDirs(), () => store.put('k', Buffer.from('x'))]) {
      await assert.rejects(op(), (err: Error) => {
        assert.ok(err instanceof StoreError, String(err));
        assert.equal(err.code, 'NoSuchBucket');
        assert.match(err.message, /bucket "no-such-bucket-here" does not exist/);
        return true;
      });
    }
    await assert.rejects(
      saveCheckpoint('s3://no-such-bucket-here/x', 1, { meta: tinyMeta() }),
      /no-such-bucket-here/,
    );
    await assert.rejects(
      findLastStep('s3://no-such-bucket-here/x'),
      /bucket "no-such-bucket-here" does not exist/,
    );
  });
});

describe('checkpoints on s3://', () => {
  it('save, load, list, verify and last-step round trip', async () => {
    const dir = url('base_checkpoints/d2');
    await save(dir, 10, 1);
    await save(dir, 20, 2);
    const loaded = await loadCheckpoint(dir, 20);
    assert.deepEqual(loaded.model, tinyModel(2, 8));
    assert.deepEqual(loaded.optimizer, tinyOptimizer(2));
    assert.equal(loaded.meta.seed, 2);
    assert.deepEqual(
      (await listCheckpoints(dir)).map((c) => [c.step, c.committed]),
      [
        [10, true],
        [20, true],
      ],
    );
    assert.equal((await verifyCheckpoint(dir, 10)).ok, true);
    assert.equal(await findLastStep(dir), 20);
    await assert.rejects(save(dir, 20, 3), AlreadyCommittedError);
  });

  it('a corrupt newest checkpoint is skipped by last-step and named by verify', async () => {
    const dir = url('corrupt/d2');
    await save(dir, 1);
    await save(dir, 2);
    const store = openStore(dir);
    const bytes = await store.read(modelFile(2));
    bytes[bytes.length - 1]! ^= 0xff;
    await store.put(modelFile(2), bytes);
    const result = await verifyCheckpoint(dir, 2);
    assert.equal(result.ok, false);
    assert.deepEqual(
      result.problems.map((p) => [p.file, p.reason]),
      [[modelFile(2), 'crc32']],
    );
    assert.equal(await findLastStep(dir), 1);
  });

  it('prune keeps the policy and deletes manifest-first on S3', async () => {
    const dir = url('prune/d2');
    for (const step of [10, 20, 30, 40]) await save(dir, step, step);
    const result = await pruneCheckpoints(dir, { keepLast: 2 });
    assert.deepEqual(
      result.deleted.sort((a, b) => a - b),
      [10, 20],
    );
    assert.deepEqual(await committedSteps(dir), [30, 40]);
    assert.deepEqual(
      (await listCheckpoints(dir)).map((c) => c.step),
      [30, 40],
      'no files of pruned steps left',
    );
  });

  it('gc collects orphans by LastModified, after the grace period only', async () => {
    const dir = url('gc/d2');
    await save(dir, 10);
    const store = openStore(dir);
    await store.put(modelFile(20), Buffer.from('half a save'));
    await store.put('meta_000020.json', Buffer.from('{}'));
    const young = await garbageCollect(dir); // default grace: 1 hour
    assert.deepEqual(young.removed, []);
    assert.deepEqual(young.keptYoung.sort(), ['meta_000020.json', modelFile(20)]);
    const later = await garbageCollect(dir, { now: Date.now() + 2 * 3_600_000 });
    assert.deepEqual(later.removed.map((r) => r.file).sort(), ['meta_000020.json', modelFile(20)]);
    assert.deepEqual(
      (await listCheckpoints(dir)).map((c) => c.step),
      [10],
    );
    assert.equal((await verifyCheckpoint(dir, 10)).ok, true);
  });

  it('two writers commit the same step at once: exactly one wins, the other gets AlreadyCommittedError', async () => {
    const dir = url('two-writers/d2');
    for (const step of [1, 2, 3, 4, 5]) {
      // Two connections, as two processes would have.
      const a = new S3Store(dir, server.options());
      const b = new S3Store(dir, server.options());
      const results = await Promise.allSettled([a, b].map((s) => save(s, step)));
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(
        won.length,
        1,
        `step ${step}: ${results.map((r) => (r.status === 'rejected' ? r.reason : 'ok'))}`,
      );
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.ok(lost.reason instanceof AlreadyCommittedError, String(lost.reason));
      assert.equal((await verifyCheckpoint(dir, step)).ok, true);
    }
  });
});

/** A store that kills the S3 server (SIGKILL) once a put has read `after` bytes of one file. */
class KillingStore extends S3Store {
  killed = false;
  constructor(
    location: string,
    conn: S3Connection,
    private readonly target: (key: string) => boolean,
    private readonly after: number,
  ) {
    super(location, conn);
  }
  override async put(key: string, source: ByteSource, options?: PutOptions) {
    if (!this.target(key) || this.killed) return super.put(key, source, options);
    const threshold = this.after;
    const kill = async () => {
      if (this.killed) return;
      this.killed = true;
      await server.kill();
    };
    async function* killMidway(): AsyncIterable<Uint8Array> {
      let seen = 0;
      for await (const chunk of (source instanceof Uint8Array
        ? [source]
        : source) as AsyncIterable<Uint8Array>) {
        if (seen >= threshold) await kill();
        seen += chunk.byteLength;
        yield chunk;
      }
      await kill(); // a source shorter than the threshold: before the upload can complete
    }
    return super.put(key, killMidway(), options);
  }
}

describe('the S3 server killed mid-upload', () => {
  for (const [name, what, target, after] of [
    ['model', 'a multipart model upload', (k: string) => k.startsWith('model_'), 6 << 20],
    ['manifest', 'the manifest upload', (k: string) => k.startsWith('manifest_'), 0],
  ] as const) {
    it(`during ${what}: nothing partial is committed after restart, and the retry commits`, async () => {
      const dir = url(`killed-${name}/d2`);
      // ~12.6 MB model: three 5 MiB parts.
      const big = (seed: number) => ({
        model: tinyModel(seed, 393_216),
        optimizer: tinyOptimizer(seed),
        meta: tinyMeta(),
      });
      const conn = new S3Connection(server.options({ partSize: 5 << 20, maxAttempts: 2 }));
      await saveCheckpoint(new S3Store(dir, conn), 10, big(1));
      const killing = new KillingStore(dir, conn, target, after);
      await assert.rejects(saveCheckpoint(killing, 20, big(2)), StoreError);
      assert.equal(killing.killed, true);
      await server.restart();

      const fresh = new S3Store(dir, server.options());
      assert.equal(await fresh.exists(manifestFile(20)), false);
      if (server.persistent) {
        // (moto, the fallback server, forgets everything when it dies.)
        assert.deepEqual(await committedSteps(fresh), [10]);
        assert.equal(await findLastStep(fresh), 10);
        assert.equal((await verifyCheckpoint(fresh, 10)).ok, true);
      }

      const retry = await saveCheckpoint(fresh, 20, big(2));
      assert.equal(retry.committed, true);
      assert.equal(await findLastStep(fresh), 20);
      const loaded = await loadCheckpoint(fresh, 20);
      assert.deepEqual(loaded.model!['lm_head.weight']!.data, big(2).model['lm_head.weight']!.data);
    });
  }
});

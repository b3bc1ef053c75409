/**
 * copyCheckpoints between local directories and S3: identical bytes, verified and committed at the
 * destination, already-committed steps skipped, corrupt sources refused before they are published.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  committedSteps,
  configureS3,
  copyCheckpoints,
  evalFile,
  findLastStep,
  listCheckpoints,
  loadCheckpoint,
  LocalStore,
  manifestFile,
  modelFile,
  NotCommittedError,
  openStore,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

let server: S3TestServer;
before(async () => {
  server = await startS3Server();
  // Small parts so the bigger model of these tests goes up as a multipart upload.
  configureS3(server.options({ partSize: 5 << 20 }));
});
after(async () => {
  configureS3();
  await server?.stop();
});

const url = (prefix: string) => `s3://${server.bucket}/${prefix}`;
const data = (seed: number, size = 8) => ({
  model: tinyModel(seed, size),
  optimizer: tinyOptimizer(seed),
  meta: tinyMeta({ seed }),
});

function filesOf(dir: string): Record<string, Buffer> {
  return Object.fromEntries(
    readdirSync(dir)
      .sort()
      .map((f) => [f, readFileSync(join(dir, f))]),
  );
}

describe('copyCheckpoints', () => {
  it('local → s3 → local gives identical bytes that verify, eval results included', async () => {
    const src = tempDir();
    await saveCheckpoint(src, 10, data(1));
    await saveCheckpoint(src, 20, data(2, 400_000)); // ~6.4 MB model: a multipart upload
    await new LocalStore(src).put(evalFile(20), Buffer.from('{"val_loss": 1.5}\n'));
    const s3 = url('copy/d2');
    const seen = new Map<number, { bytes: number; totalBytes: number; calls: number }>();
    const up = await copyCheckpoints(src, s3, {
      onProgress: (p) => {
        const last = seen.get(p.step);
        assert.ok(!last || p.bytes >= last.bytes, 'progress never goes back');
        seen.set(p.step, { bytes: p.bytes, totalBytes: p.totalBytes, calls: (last?.calls ?? 0) + 1 });
      },
    });
    assert.deepEqual(
      up.copied.map((c) => c.step),
      [10, 20],
    );
    for (const c of up.copied) {
      const p = seen.get(c.step)!;
      assert.deepEqual(
        [p.bytes, p.totalBytes],
        [c.bytes, c.bytes],
        `progress of step ${c.step} ends at its bytes`,
      );
    }
    assert.ok(seen.get(20)!.calls > 1, 'a large step reports progress more than once');
    assert.deepEqual([up.skipped, up.failed], [[], []]);
    assert.deepEqual(await committedSteps(s3), [10, 20]);
    for (const step of [10, 20]) assert.equal((await verifyCheckpoint(s3, step)).ok, true);
    assert.deepEqual((await listCheckpoints(s3)).find((c) => c.step === 20)?.metrics, { val_loss: 1.5 });

    const back = tempDir();
    const down = await copyCheckpoints(s3, back);
    assert.deepEqual(
      down.copied.map((c) => c.step),
      [10, 20],
    );
    assert.deepEqual(filesOf(back), filesOf(src), 'every file byte-identical, manifests included');
    assert.equal(await findLastStep(back), 20);
    assert.deepEqual((await loadCheckpoint(back, 20)).model, tinyModel(2, 400_000));
  });

  it('skips steps already committed at the destination and copies only --step when given', async () => {
    const src = url('copy-skip/src');
    const dst = tempDir();
    for (const step of [1, 2, 3]) await saveCheckpoint(src, step, data(step));
    const one = await copyCheckpoints(src, dst, { step: 2 });
    assert.deepEqual(
      one.copied.map((c) => c.step),
      [2],
    );
    const rest = await copyCheckpoints(src, dst);
    assert.deepEqual(
      rest.copied.map((c) => c.step),
      [1, 3],
    );
    assert.deepEqual(
      rest.skipped.map((s) => s.step),
      [2],
    );
    assert.match(rest.skipped[0]!.why, /already committed/);
    await assert.rejects(copyCheckpoints(src, dst, { step: 9 }), NotCommittedError);
  });

  it('a corrupt source step is reported and never committed at the destination; the others copy', async () => {
    const src = tempDir();
    await saveCheckpoint(src, 1, data(1));
    await saveCheckpoint(src, 2, data(2));
    const model = join(src, modelFile(2));
    const bytes = readFileSync(model);
    bytes[bytes.length - 2]! ^= 0x10;
    writeFileSync(model, bytes);
    const dst = url('copy-corrupt/d2');
    const result = await copyCheckpoints(src, dst);
    assert.deepEqual(
      result.copied.map((c) => c.step),
      [1],
    );
    assert.deepEqual(
      result.failed.map((f) => f.step),
      [2],
    );
    assert.match(result.failed[0]!.error, /crc32/);
    assert.deepEqual(await committedSteps(dst), [1]);
    // The bad bytes were refused before the upload was completed: no model file for step 2 at all.
    assert.equal(await openStore(dst).exists(modelFile(2)), false);
    assert.equal(await openStore(dst).exists(manifestFile(2)), false);
  });

  it('an earlier attempt that left different bytes at the destination is replaced, then committed', async () => {
    const src = tempDir();
    await saveCheckpoint(src, 5, data(5));
    const dst = url('copy-stale/d2');
    await openStore(dst).put(modelFile(5), Buffer.from('left by a crashed copy'));
    const result = await copyCheckpoints(src, dst);
    assert.deepEqual(
      result.copied.map((c) => c.step),
      [5],
    );
    assert.equal((await verifyCheckpoint(dst, 5)).ok, true);
  });

  it('local → local and s3 → s3 work the same way', async () => {
    const a = tempDir();
    const b = tempDir();
    await saveCheckpoint(a, 7, data(7));
    assert.deepEqual(
      (await copyCheckpoints(a, b)).copied.map((c) => c.step),
      [7],
    );
    assert.deepEqual(filesOf(b), filesOf(a));
    const s1 = url('s3s3/one');
    const s2 = url('s3s3/two');
    await copyCheckpoints(a, s1);
    assert.deepEqual(
      (await copyCheckpoints(s1, s2)).copied.map((c) => c.step),
      [7],
    );
    assert.equal((await verifyCheckpoint(s2, 7)).ok, true);
    await assert.rejects(copyCheckpoints(s1, `${s1}/`), /same location/);
  });
});

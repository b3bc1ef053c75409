import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, it } from 'node:test';
import {
  AlreadyCommittedError,
  deleteCheckpoint,
  IntegrityError,
  loadCheckpoint,
  manifestFile,
  metaFile,
  MissingFileError,
  modelFile,
  NotCommittedError,
  optimFile,
  readManifest,
  saveCheckpoint,
  toFloat32,
  WorldSizeMismatchError,
  f32Tensor,
  InvalidArgumentError,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, sha(join(dir, f))]));
}

describe('save and load round trip', () => {
  it('restores model, optimizer and meta exactly, with a manifest listing every file', async () => {
    const dir = tempDir();
    const model = tinyModel(3);
    const res = await saveCheckpoint(dir, 100, {
      model,
      optimizer: tinyOptimizer(3),
      meta: tinyMeta({ loss: 1.5 }),
    });
    assert.equal(res.committed, true);
    const manifest = await readManifest(dir, 100);
    assert.deepEqual(Object.keys(manifest.files).sort(), [metaFile(100), modelFile(100), optimFile(100, 0)]);
    for (const [file, rec] of Object.entries(manifest.files)) {
      assert.equal(
        rec.crc32,
        crc32(readFileSync(join(dir, file)))
          .toString(16)
          .padStart(8, '0'),
      );
      assert.equal(rec.bytes, statSync(join(dir, file)).size);
    }
    const loaded = await loadCheckpoint(dir, 100);
    assert.equal(loaded.meta.step, 100);
    assert.equal(loaded.meta.world_size, 1);
    assert.equal(loaded.meta.loss, 1.5);
    for (const [name, t] of Object.entries(model)) {
      assert.deepEqual(loaded.model![name]!.shape, t.shape);
      assert.deepEqual(
        Buffer.from(toFloat32(loaded.model![name]!).buffer),
        Buffer.from((t.data as Float32Array).buffer),
      );
    }
    assert.deepEqual(Object.keys(loaded.optimizer!).sort(), Object.keys(tinyOptimizer(3)).sort());
  });

  it('writes steps zero-padded to six digits and parses steps past 999999', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 7, { model: tinyModel(), meta: tinyMeta() });
    await saveCheckpoint(dir, 1234567, { model: tinyModel(), meta: tinyMeta() });
    assert.ok(existsSync(join(dir, 'model_000007.safetensors')));
    assert.ok(existsSync(join(dir, 'manifest_1234567.json')));
    assert.equal((await loadCheckpoint(dir, 1234567)).meta.step, 1234567);
  });

  it('saves bf16 and f16 model tensors that load as the correctly rounded f32 values', async () => {
    const dir = tempDir();
    const values = [1, 1.00390625, 1.005859375, -3.14159, 65504, 1e-8, 0.1];
    // bf16 keeps 7 mantissa bits: 1 + 2^-8 is a tie and rounds to even (1), 1 + 1.5 * 2^-8 rounds up.
    const bf16 = values.map(roundBf16);
    assert.deepEqual(bf16.slice(0, 5), [1, 1, 1.0078125, -3.140625, 65536]);
    for (const [dtype, step] of [
      ['BF16', 1],
      ['F16', 2],
    ] as const) {
      await saveCheckpoint(
        dir,
        step,
        { model: { w: f32Tensor([values.length], values) }, meta: tinyMeta() },
        { saveDtype: dtype },
      );
      const loaded = await loadCheckpoint(dir, step);
      assert.equal(loaded.model!.w!.dtype, 'F32');
      const got = Array.from(toFloat32(loaded.model!.w!));
      if (dtype === 'BF16') assert.deepEqual(got, bf16);
      else
        assert.deepEqual(
          got,
          values.map((v) => Math.fround(roundF16(v))),
        );
    }
  });

  it('keeps optimizer shards in f32 whatever the model save dtype', async () => {
    const dir = tempDir();
    await saveCheckpoint(
      dir,
      1,
      { model: tinyModel(), optimizer: tinyOptimizer(), meta: tinyMeta() },
      { saveDtype: 'BF16' },
    );
    const loaded = await loadCheckpoint(dir, 1, { toFloat32: false });
    assert.equal(loaded.model!['lm_head.weight']!.dtype, 'BF16');
    assert.equal(loaded.optimizer!['transformer.wte.weight.exp_avg']!.dtype, 'F32');
  });
});

/** Reference bf16 rounding: round-to-nearest-even on the top 16 bits of the f32 pattern. */
function roundBf16(v: number): number {
  const bits = new Uint32Array(new Float32Array([v]).buffer)[0]!;
  const rounded = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16;
  return new Float32Array(new Uint32Array([rounded >>> 0]).buffer)[0]!;
}

/** Reference f16 rounding through the binary16 grid (values here are normal f16 numbers). */
function roundF16(v: number): number {
  if (Math.abs(v) < 6.103515625e-5) return Math.round(v / 2 ** -24) * 2 ** -24;
  const e = Math.floor(Math.log2(Math.abs(v)));
  const ulp = 2 ** (e - 10);
  const q = v / ulp;
  const r = Math.round(q);
  const tie = Math.abs(q - Math.trunc(q)) === 0.5;
  return (tie ? (Math.trunc(q) % 2 === 0 ? Math.trunc(q) : Math.trunc(q) + Math.sign(q)) : r) * ulp;
}

describe('rank-aware checkpoints', () => {
  it('rank 0 writes model + meta, every rank its optimizer shard, and one manifest commits them all', async () => {
    const dir = tempDir();
    const world = 3;
    const results = await Promise.all(
      Array.from({ length: world }, (_, rank) =>
        saveCheckpoint(
          dir,
          50,
          { model: tinyModel(), optimizer: tinyOptimizer(5, rank), meta: tinyMeta() },
          { rank, worldSize: world },
        ),
      ),
    );
    assert.deepEqual(
      results.map((r) => r.committed),
      [true, false, false],
    );
    const manifest = await readManifest(dir, 50);
    assert.equal(manifest.world_size, 3);
    assert.deepEqual(Object.keys(manifest.files).sort(), [
      metaFile(50),
      modelFile(50),
      optimFile(50, 0),
      optimFile(50, 1),
      optimFile(50, 2),
    ]);
    assert.ok(
      !readdirSync(dir).some((f) => f.startsWith('.rank-done')),
      'rank records are cleaned after commit',
    );
    for (let rank = 0; rank < world; rank++) {
      const loaded = await loadCheckpoint(dir, 50, { rank, worldSize: world });
      assert.deepEqual(
        Array.from(loaded.optimizer!['transformer.wte.weight.exp_avg']!.data as Float32Array),
        [5, rank, 0.5],
      );
    }
  });

  it('a world-size mismatch is a typed error naming both sizes', async () => {
    const dir = tempDir();
    await Promise.all(
      [0, 1].map((rank) =>
        saveCheckpoint(
          dir,
          5,
          { model: tinyModel(), optimizer: tinyOptimizer(1, rank), meta: tinyMeta() },
          { rank, worldSize: 2 },
        ),
      ),
    );
    await assert.rejects(loadCheckpoint(dir, 5, { rank: 0, worldSize: 4 }), (err: unknown) => {
      assert.ok(err instanceof WorldSizeMismatchError);
      assert.match(err.message, /world size 2/);
      assert.match(err.message, /world size 4/);
      assert.equal(err.exitCode, 2);
      return true;
    });
  });

  it('a missing rank file is a typed error naming the file', async () => {
    const dir = tempDir();
    await Promise.all(
      [0, 1].map((rank) =>
        saveCheckpoint(
          dir,
          5,
          { model: tinyModel(), optimizer: tinyOptimizer(1, rank), meta: tinyMeta() },
          { rank, worldSize: 2 },
        ),
      ),
    );
    require('node:fs').unlinkSync(join(dir, optimFile(5, 1)));
    await assert.rejects(loadCheckpoint(dir, 5, { rank: 1 }), (err: unknown) => {
      assert.ok(err instanceof MissingFileError);
      assert.match(err.message, /optim_000005_rank1\.safetensors/);
      return true;
    });
    await assert.rejects(loadCheckpoint(dir, 5, { rank: 2 }), InvalidArgumentError);
  });

  it('the manifest waits for every rank: a rank that never arrives means no commit', async () => {
    const dir = tempDir();
    await assert.rejects(
      saveCheckpoint(
        dir,
        9,
        { model: tinyModel(), optimizer: tinyOptimizer(), meta: tinyMeta() },
        { rank: 0, worldSize: 2, commitTimeoutMs: 300 },
      ),
      /rank 1 of 2 did not finish/,
    );
    assert.ok(!existsSync(join(dir, manifestFile(9))));
  });
});

describe('commit protocol', () => {
  it('a second writer of a committed step is refused and changes no byte', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 10, { model: tinyModel(1), optimizer: tinyOptimizer(1), meta: tinyMeta() });
    const before = snapshot(dir);
    await assert.rejects(
      saveCheckpoint(dir, 10, {
        model: tinyModel(2),
        optimizer: tinyOptimizer(2),
        meta: tinyMeta({ other: true }),
      }),
      (err: unknown) => err instanceof AlreadyCommittedError && /already committed/.test(err.message),
    );
    assert.deepEqual(snapshot(dir), before);
  });

  it('replaces stale files of an uncommitted attempt, and keeps identical ones', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, modelFile(3)), 'garbage from a crashed save');
    await saveCheckpoint(dir, 3, { model: tinyModel(), meta: tinyMeta() });
    const loaded = await loadCheckpoint(dir, 3);
    assert.ok(loaded.model!['lm_head.weight']);
  });

  it('two writers of the same step produce identical tensor files (no times or hosts inside)', async () => {
    const a = tempDir();
    const b = tempDir();
    await saveCheckpoint(a, 1, { model: tinyModel(4), optimizer: tinyOptimizer(4), meta: tinyMeta() });
    await new Promise((r) => setTimeout(r, 20));
    await saveCheckpoint(b, 1, { model: tinyModel(4), optimizer: tinyOptimizer(4), meta: tinyMeta() });
    assert.equal(sha(join(a, modelFile(1))), sha(join(b, modelFile(1))));
    assert.equal(sha(join(a, optimFile(1, 0))), sha(join(b, optimFile(1, 0))));
  });

  it('a step without a manifest does not exist', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 1, { model: tinyModel(), meta: tinyMeta() });
    require('node:fs').unlinkSync(join(dir, manifestFile(1)));
    await assert.rejects(loadCheckpoint(dir, 1), NotCommittedError);
  });

  it('load verifies every byte: a flipped byte is an IntegrityError naming the file', async () => {
    for (const file of [modelFile(2), optimFile(2, 0), metaFile(2)]) {
      const dir = tempDir();
      await saveCheckpoint(dir, 2, { model: tinyModel(), optimizer: tinyOptimizer(), meta: tinyMeta() });
      const bytes = readFileSync(join(dir, file));
      bytes[bytes.length - 3]! ^= 0x01;
      writeFileSync(join(dir, file), bytes);
      await assert.rejects(loadCheckpoint(dir, 2), (err: unknown) => {
        assert.ok(err instanceof IntegrityError, `${file}: ${err}`);
        assert.equal(err.file, file);
        assert.equal(err.exitCode, 1);
        return true;
      });
    }
  });

  it('delete removes the manifest first, then the files, eval results included', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 4, { model: tinyModel(), optimizer: tinyOptimizer(), meta: tinyMeta() });
    writeFileSync(join(dir, 'eval_000004.json'), '{"step":4,"val_bpb":1.2}');
    const removed = await deleteCheckpoint(dir, 4);
    assert.equal(removed[0], manifestFile(4));
    assert.deepEqual(readdirSync(dir), []);
    await assert.rejects(deleteCheckpoint(dir, 4), NotCommittedError);
  });

  it('rejects bad steps and ranks before touching the disk', async () => {
    const dir = tempDir();
    for (const step of [-1, 1.5, NaN, Number.MAX_SAFE_INTEGER + 2]) {
      await assert.rejects(saveCheckpoint(dir, step, { meta: {} }), InvalidArgumentError);
    }
    await assert.rejects(
      saveCheckpoint(dir, 1, { meta: {} }, { rank: 2, worldSize: 2 }),
      InvalidArgumentError,
    );
    assert.deepEqual(readdirSync(dir), []);
  });
});

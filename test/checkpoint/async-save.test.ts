import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  AlreadyCommittedError,
  AsyncSaver,
  configureLogging,
  hasSpareSaveThread,
  manifestFile,
  prestartSaveThread,
  modelFile,
  optimFile,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

describe('asynchronous save', () => {
  it('writes the same bytes as a synchronous save, on a worker thread', async () => {
    const syncDir = tempDir();
    const asyncDir = tempDir();
    await saveCheckpoint(
      syncDir,
      10,
      { model: tinyModel(2, 1000), optimizer: tinyOptimizer(2), meta: tinyMeta() },
      { saveDtype: 'BF16' },
    );
    const saver = new AsyncSaver();
    await saver.save(
      asyncDir,
      10,
      { model: tinyModel(2, 1000), optimizer: tinyOptimizer(2), meta: tinyMeta() },
      { saveDtype: 'BF16' },
    );
    const result = await saver.finish();
    await saver.close();
    assert.equal(result?.committed, true);
    for (const f of [modelFile(10), optimFile(10, 0)])
      assert.equal(sha(join(asyncDir, f)), sha(join(syncDir, f)), f);
    assert.equal((await verifyCheckpoint(asyncDir, 10)).ok, true);
  });

  it('with `shared`, reads tensors in SharedArrayBuffers where they are, and writes the same bytes', async () => {
    const syncDir = tempDir();
    const asyncDir = tempDir();
    const model = tinyModel(3, 500);
    await saveCheckpoint(syncDir, 4, { model, optimizer: tinyOptimizer(3), meta: tinyMeta() });
    const shared = Object.fromEntries(
      Object.entries(model).map(([name, t]) => {
        const data = new Uint8Array(new SharedArrayBuffer(t.data.byteLength));
        data.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        return [name, { ...t, data }];
      }),
    );
    const saver = new AsyncSaver();
    await saver.save(
      asyncDir,
      4,
      { model: shared, optimizer: tinyOptimizer(3), meta: tinyMeta() },
      { transfer: true, shared: true },
    );
    const result = await saver.finish();
    await saver.close();
    assert.equal(result?.committed, true);
    // Not transferred or copied away: the caller's shared buffers are still whole and readable.
    for (const t of Object.values(shared)) assert.ok(t.data.byteLength > 0);
    for (const f of [modelFile(4), optimFile(4, 0)])
      assert.equal(sha(join(asyncDir, f)), sha(join(syncDir, f)), f);
    assert.equal((await verifyCheckpoint(asyncDir, 4)).ok, true);
  });

  it('takes a prestarted save thread when its store settings match, and writes the same bytes', async () => {
    const dir = tempDir();
    const expected = tempDir();
    await saveCheckpoint(expected, 5, { model: tinyModel(4, 1000), meta: tinyMeta() });
    prestartSaveThread({ endpoint: 'http://127.0.0.1:1' });
    assert.equal(hasSpareSaveThread(), true);
    const other = new AsyncSaver(); // other store settings: a thread of its own, the spare stays
    await other.save(tempDir(), 1, { model: tinyModel(1), meta: tinyMeta() });
    await other.close();
    assert.equal(hasSpareSaveThread(), true);
    const saver = new AsyncSaver({ storeConfig: { endpoint: 'http://127.0.0.1:1' } });
    await saver.save(dir, 5, { model: tinyModel(4, 1000), meta: tinyMeta() });
    assert.equal(hasSpareSaveThread(), false, 'the saver took the prestarted thread');
    assert.equal((await saver.finish())?.committed, true);
    await saver.close();
    assert.equal(sha(join(dir, modelFile(5))), sha(join(expected, modelFile(5))));
  });

  it('snapshots the tensors: changing them after save() returns does not change what is written', async () => {
    const dir = tempDir();
    const model = tinyModel(3);
    const expected = tempDir();
    await saveCheckpoint(expected, 1, { model: tinyModel(3), meta: tinyMeta() });
    const saver = new AsyncSaver();
    await saver.save(dir, 1, { model, meta: tinyMeta() });
    (model['lm_head.weight']!.data as Float32Array).fill(42);
    await saver.close();
    assert.equal(sha(join(dir, modelFile(1))), sha(join(expected, modelFile(1))));
  });

  it('keeps at most one save in flight and reports a step only once it is committed', async () => {
    const dir = tempDir();
    const reported: Array<{ step: number; manifest: boolean }> = [];
    const saver = new AsyncSaver({
      onCommitted: (r) =>
        reported.push({ step: r.step, manifest: existsSync(join(dir, manifestFile(r.step))) }),
    });
    for (const step of [1, 2, 3]) {
      await saver.save(dir, step, {
        model: tinyModel(step, 20000),
        optimizer: tinyOptimizer(step),
        meta: tinyMeta(),
      });
      assert.equal(saver.savingStep, step);
      // The previous save finished before this one started.
      assert.deepEqual(
        reported.map((r) => r.step),
        Array.from({ length: step - 1 }, (_, i) => i + 1),
      );
    }
    await saver.close();
    assert.deepEqual(
      reported,
      [1, 2, 3].map((step) => ({ step, manifest: true })),
    );
  });

  it('a write failure surfaces on the next save and on finish, and commits nothing', async () => {
    const parent = tempDir();
    const blocked = join(parent, 'not-a-directory');
    writeFileSync(blocked, 'a file where the checkpoint directory should be');
    const saver = new AsyncSaver();
    await saver.save(join(blocked, 'd1'), 5, { model: tinyModel(), meta: tinyMeta() });
    await assert.rejects(
      saver.save(join(blocked, 'd1'), 6, { model: tinyModel(), meta: tinyMeta() }),
      /cannot (create|write)/,
    );
    await saver.save(join(blocked, 'd1'), 7, { model: tinyModel(), meta: tinyMeta() });
    await assert.rejects(saver.finish(), /cannot (create|write)/);
    await saver.close();
  });
});

describe('the save thread is invisible to callers', () => {
  it('an error comes back as its own class with its exit code, retry decision and fields', async () => {
    const dir = tempDir();
    const data = () => ({ model: tinyModel(1), optimizer: tinyOptimizer(1), meta: tinyMeta() });
    await saveCheckpoint(dir, 10, data());
    const direct = await saveCheckpoint(dir, 10, data()).then(
      () => assert.fail('saved over a committed step'),
      (e: unknown) => e as AlreadyCommittedError,
    );
    const saver = new AsyncSaver();
    await saver.save(dir, 10, data());
    const threaded = await saver.finish().then(
      () => assert.fail('saved over a committed step on the save thread'),
      (e: unknown) => e,
    );
    await saver.close();
    assert.ok(threaded instanceof AlreadyCommittedError, `got ${String(threaded)}`);
    // The CLI exits with exitCode (2: bad input) and adds no --debug hint to errors of the hierarchy.
    for (const key of ['name', 'message', 'exitCode', 'retryable', 'file', 'step'] as const)
      assert.deepEqual(threaded[key], direct[key], key);
    assert.equal(threaded.exitCode, 2);
    assert.equal(threaded.retryable, false);
    assert.match(threaded.stack ?? '', /writeCheckpointFiles|publish/, "the thread's stack is kept");
  });

  it("its log lines go through this thread's logger, in text format when that is the format", async () => {
    const dir = tempDir();
    // Left by an earlier save of step 10 that crashed before its commit: replaced, with a warning.
    writeFileSync(join(dir, modelFile(10)), 'stale bytes of a crashed save');
    const lines: string[] = [];
    configureLogging({ format: 'text', destination: { write: (line: string) => void lines.push(line) } });
    try {
      const saver = new AsyncSaver();
      await saver.save(dir, 10, { model: tinyModel(1), meta: tinyMeta() });
      assert.equal((await saver.finish())?.committed, true);
      await saver.close();
    } finally {
      configureLogging({});
    }
    assert.deepEqual(lines, [
      `ckpt: warning: replacing ${modelFile(10)} left by an earlier save of step 10 that never committed\n`,
    ]);
    assert.equal((await verifyCheckpoint(dir, 10)).ok, true);
  });
});

/** The retention log: pruning records each deleted step before its manifest goes; nothing else mistakes it. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  appendRetentionLog,
  committedSteps,
  deleteCheckpoint,
  garbageCollect,
  listCheckpoints,
  LocalStore,
  manifestFile,
  parseFileName,
  pruneCheckpoints,
  readRetentionLog,
  RETENTION_LOG,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

async function saveSteps(dir: string, steps: number[]): Promise<void> {
  for (const step of steps) {
    const meta = tinyMeta({ loss_history: [[step, 1 / step]] });
    await saveCheckpoint(dir, step, { model: tinyModel(step), optimizer: tinyOptimizer(), meta });
  }
}

describe('retention log', () => {
  it('is a file of the directory, not of any step', () => {
    assert.deepEqual(parseFileName(RETENTION_LOG), { kind: 'retention-log' });
    assert.equal(parseFileName('retention_log.jsonl.bak'), null);
  });

  it('records every pruned step with why, policy, time, size, metrics and loss history', async () => {
    const dir = tempDir();
    await saveSteps(dir, [1, 2, 3, 4]);
    writeFileSync(join(dir, 'eval_000001.json'), JSON.stringify({ step: 1, val_bpb: 2.5 }));
    const now = Date.parse('2026-03-04T05:06:07.000Z');
    const result = await pruneCheckpoints(dir, { keepLast: 2 }, { now });
    assert.deepEqual(result.deleted, [1, 2]);
    const log = await readRetentionLog(dir);
    assert.deepEqual(
      log.map((e) => ({ step: e.step, policy: e.policy, time: e.time })),
      [
        { step: 1, policy: { keepLast: 2 }, time: '2026-03-04T05:06:07.000Z' },
        { step: 2, policy: { keepLast: 2 }, time: '2026-03-04T05:06:07.000Z' },
      ],
    );
    assert.match(log[0]!.why, /older than the last 2/);
    assert.deepEqual(log[0]!.metrics, { step: 1, val_bpb: 2.5 });
    assert.deepEqual(log[0]!.loss_history, [[1, 1]]);
    assert.ok(log[0]!.bytes! > 0);
    // Append-only: a second prune adds lines and keeps the old ones.
    await pruneCheckpoints(dir, { keepLast: 1 });
    assert.deepEqual(
      (await readRetentionLog(dir)).map((e) => e.step),
      [1, 2, 3],
    );
    assert.equal(readFileSync(join(dir, RETENTION_LOG), 'utf8').trim().split('\n').length, 3);
  });

  it('is written before the step manifest is deleted', async () => {
    const dir = tempDir();
    await saveSteps(dir, [1, 2]);
    const store = new LocalStore(dir);
    const seen: string[] = [];
    const realDelete = store.delete.bind(store);
    store.delete = async (key: string) => {
      if (key === manifestFile(1)) seen.push(readFileSync(join(dir, RETENTION_LOG), 'utf8'));
      return realDelete(key);
    };
    await pruneCheckpoints(store, { keepLast: 1 });
    assert.equal(seen.length, 1);
    assert.equal(JSON.parse(seen[0]!.trim()).step, 1);
  });

  it('is not written by a dry run', async () => {
    const dir = tempDir();
    await saveSteps(dir, [1, 2]);
    const result = await pruneCheckpoints(dir, { keepLast: 1 }, { dryRun: true });
    assert.deepEqual(result.deleted, []);
    assert.equal(existsSync(join(dir, RETENTION_LOG)), false);
    assert.deepEqual(await readRetentionLog(dir), []);
  });

  it('is left alone by gc, delete, discovery and verify', async () => {
    const dir = tempDir();
    await saveSteps(dir, [1, 2, 3]);
    await pruneCheckpoints(dir, { keepLast: 2 });
    const gc = await garbageCollect(dir, { graceMs: 0 });
    assert.deepEqual(gc.removed, []);
    await deleteCheckpoint(dir, 2);
    assert.ok(existsSync(join(dir, RETENTION_LOG)));
    assert.deepEqual(
      (await listCheckpoints(dir)).map((c) => c.step),
      [3],
    );
    assert.deepEqual(await committedSteps(dir), [3]);
    assert.equal((await verifyCheckpoint(dir, 3)).ok, true);
  });

  it('skips lines that do not parse and still appends after them', async () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, RETENTION_LOG),
      '{"step":1,"why":"w","policy":{},"time":"2026-01-01T00:00:00Z"}\nnot json\n{"step":"x"}',
    );
    await appendRetentionLog(dir, {
      step: 7,
      why: 'w',
      policy: { keepLast: 0 },
      time: '2026-01-02T00:00:00.000Z',
    });
    assert.deepEqual(
      (await readRetentionLog(dir)).map((e) => e.step),
      [1, 7],
    );
  });
});

/**
 * The state a training process keeps between segments (sticky segments, train/trainer.ts): the next
 * segment continues from it without reading the checkpoint back only when it is the directory's last
 * commit, made under the writer epoch just before the segment's own; either way the bits are those of one
 * uninterrupted run.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { acquireWriter } from '../../checkpoint';
import { train, type TrainOptions, type WarmRun } from '../../train/trainer';
import { tempDir } from '../helpers/tmp';

const RUN = {
  saveEvery: 4,
  config: { n_layer: 1, n_embd: 32, sequence_len: 32 },
  batch: 4,
  seed: 7,
  resume: 'last',
  backend: 'wasm',
  asyncSave: false,
} satisfies Partial<TrainOptions>;

const sha = (dir: string, file: string) =>
  createHash('sha256')
    .update(readFileSync(join(dir, file)))
    .digest('hex');
const finalFiles = (dir: string) =>
  ['model_000008.safetensors', 'optim_000008_rank0.safetensors'].map((f) => sha(dir, f));

/** One segment as a pipeline's child runs it: under a fresh writer lease of the run's claim. */
async function segment(dir: string, steps: number, warm?: WarmRun) {
  const writer = await acquireWriter(dir, { holder: 'test', claim: 'run-1', takeOver: 'same-claim' });
  let kept: WarmRun | undefined;
  try {
    const summary = await train({ ...RUN, dir, steps, writer, warm, keepWarm: (w) => (kept = w) });
    return { summary, kept: kept as WarmRun | undefined };
  } finally {
    await writer.release();
  }
}

describe('a kept state', () => {
  it('continues in memory when it is the last commit, and otherwise is read back; same bits as one run', async () => {
    const root = tempDir();
    const straight = join(root, 'straight');
    await segment(straight, 8);

    const sticky = join(root, 'sticky');
    const first = await segment(sticky, 4);
    assert.equal(first.kept?.step, 4);
    const second = await segment(sticky, 8, first.kept);
    assert.equal(second.summary.inMemory, true, 'continued in memory');
    assert.deepEqual(finalFiles(sticky), finalFiles(straight));

    // Another writer held the directory in between (it could have committed anything): read back.
    const other = join(root, 'other');
    const kept = (await segment(other, 4)).kept;
    await (await acquireWriter(other, { holder: 'someone else' })).release();
    const after = await segment(other, 8, kept);
    assert.equal(after.summary.inMemory, undefined, 'read back');
    assert.equal(after.summary.resumedFrom, 4);
    assert.deepEqual(finalFiles(other), finalFiles(straight));
  });
});

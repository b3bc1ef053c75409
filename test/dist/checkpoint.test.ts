/**
 * The process group as the checkpoint coordinator, across real processes: every rank saves its optimizer
 * shard, rank 0 gathers the file records over TCP and commits one manifest listing all of them. No
 * store-polling "rank done" records are ever written.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadCheckpoint, readManifest, verifyCheckpoint } from '../../checkpoint';
import { tempDir } from '../helpers/tmp';
import { assertClean, lineOf, linesOf, runJob } from './spawn';

describe('process group coordinator for saveCheckpoint', () => {
  for (const w of [2, 3]) {
    it(`world size ${w}: one manifest per step lists every rank's shard, committed through gatherJson`, async () => {
      const dir = tempDir('pg-ckpt-');
      const runs = await runJob(w, 'checkpoint', { env: () => ({ PG_DIR: dir }) });
      assertClean(runs);

      for (const run of runs) {
        const saved = linesOf(run, 'saved');
        assert.deepEqual(
          saved.map((s) => s.step),
          [10, 20],
        );
        for (const s of saved) assert.equal(s.committed, run.rank === 0, `rank ${run.rank} step ${s.step}`);
        const puts = lineOf(run, 'puts').puts as string[];
        assert.ok(
          !puts.some((k) => k.startsWith('.rank-done')),
          `rank ${run.rank} wrote no store-coordinator records: ${puts}`,
        );
        assert.equal(puts.filter((k) => k.startsWith('manifest_')).length, run.rank === 0 ? 2 : 0);
      }

      for (const step of [10, 20]) {
        const manifest = await readManifest(dir, step);
        assert.equal(manifest.world_size, w);
        const shards = Object.keys(manifest.files).filter((f) => f.startsWith('optim_'));
        assert.deepEqual(
          shards,
          Array.from({ length: w }, (_, r) => `optim_0000${step}_rank${r}.safetensors`),
        );
        assert.ok(manifest.files[`model_0000${step}.safetensors`] && manifest.files[`meta_0000${step}.json`]);
        assert.equal((await verifyCheckpoint(dir, step)).ok, true);
        for (let rank = 0; rank < w; rank++) {
          const loaded = await loadCheckpoint(dir, step, { rank, worldSize: w });
          assert.deepEqual(Array.from(loaded.optimizer!['w.exp_avg']!.data as Float32Array), [
            step,
            rank,
            0.5,
          ]);
        }
      }
    });
  }
});

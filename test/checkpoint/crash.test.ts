import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  findLastStep,
  garbageCollect,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

const CHILD = join(__dirname, '..', 'helpers', 'save-child.ts');

/** Run the child until it reports it stopped at the chosen point, then SIGKILL it. */
function saveAndKill(dir: string, step: number, putIndex: number, phase: 'before' | 'mid'): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', CHILD, dir, String(step), String(putIndex), phase],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child never reached the kill point: ${out} ${err}`));
    }, 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('STOPPED')) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (_code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child was not killed (${out} ${err})`));
      else resolve(out.trim());
    });
  });
}

// Puts of a single-rank save, in order: 0 model, 1 meta, 2 optimizer shard, 3 manifest.
const POINTS: Array<[number, 'before' | 'mid']> = [
  [0, 'before'],
  [0, 'mid'],
  [1, 'before'],
  [1, 'mid'],
  [2, 'before'],
  [2, 'mid'],
  [3, 'before'],
  [3, 'mid'],
];

describe('SIGKILL inside saveCheckpoint never leaves a checkpoint that looks whole', () => {
  for (const [index, phase] of POINTS) {
    it(`killed ${phase} put #${index}: step 20 is not listed, step 10 is the last step and loads verified`, async () => {
      const dir = tempDir();
      await saveCheckpoint(dir, 10, {
        model: tinyModel(1, 4096),
        optimizer: tinyOptimizer(1),
        meta: tinyMeta(),
      });
      const where = await saveAndKill(dir, 20, index, phase);
      assert.match(where, /^STOPPED/);
      const listed = await listCheckpoints(dir);
      assert.deepEqual(
        listed.filter((c) => c.committed).map((c) => c.step),
        [10],
      );
      assert.equal(await findLastStep(dir), 10);
      assert.equal((await verifyCheckpoint(dir, 10)).ok, true);
      const loaded = await loadCheckpoint(dir, 10);
      assert.equal(loaded.step, 10);

      // The leftovers are orphans: a new attempt of the same step succeeds and gc cleans the rest.
      await saveCheckpoint(dir, 20, {
        model: tinyModel(1, 4096),
        optimizer: tinyOptimizer(1),
        meta: tinyMeta({ seed: 1 }),
      });
      assert.equal(await findLastStep(dir), 20);
      await garbageCollect(dir, { graceMs: 0 });
      assert.ok(!readdirSync(dir).some((f) => f.startsWith('.tmp-')), 'temp files collected');
    });
  }
});

/**
 * Collectives across real processes: W rank processes over TCP on loopback, every result checked against a
 * sequential float32 reference, bitwise, on every rank, and again on a second run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cases, expected, input, ranksInputs, referenceReduce, sha } from './cases';
import { assertClean, lineOf, linesOf, runJob, type RankRun } from './spawn';

function results(run: RankRun): Map<string, string> {
  return new Map(linesOf(run, 'case').map((l) => [l.name as string, l.result as string]));
}

function checkSuite(runs: RankRun[], w: number): void {
  assertClean(runs);
  for (const run of runs) {
    const got = results(run);
    for (const c of cases(w)) {
      assert.equal(got.get(c.name), expected(c, w, run.rank), `world ${w}, rank ${run.rank}, case ${c.name}`);
    }
    lineOf(run, 'closed');
  }
}

describe('collectives across rank processes', () => {
  it('the reference really depends on summation order (so bitwise checks mean something)', () => {
    const arrays = ranksInputs('allReduce-sum-10007', 4, 10007);
    assert.notEqual(sha(referenceReduce(arrays)), sha(referenceReduce(arrays, 'sum', [3, 2, 1, 0])));
  });

  for (const w of [1, 2, 3, 4]) {
    it(`world size ${w}: every collective matches the sequential reference on every rank (small chunks)`, async () => {
      // 64-float frames: the chunk loops, partial last chunks and zero-length slices all get exercised.
      const runs = await runJob(w, 'suite', { env: () => ({ PG_CHUNK: '64' }) });
      checkSuite(runs, w);
    });
  }

  it('world size 3: a second run gives the same bits (default 4 MiB frames)', async () => {
    const first = await runJob(3, 'suite');
    const second = await runJob(3, 'suite');
    checkSuite(first, 3);
    checkSuite(second, 3);
    for (let r = 0; r < 3; r++) assert.deepEqual(results(second[r]!), results(first[r]!));
  });

  it('world size 3: an 8M-float allReduce completes with identical bits everywhere', async () => {
    const n = 8 << 20;
    const runs = await runJob(3, 'large', { env: () => ({ PG_N: String(n) }), limitMs: 120_000 });
    assertClean(runs);
    const want = sha(referenceReduce([0, 1, 2].map((r) => input('large', r, n))));
    for (const run of runs) {
      const l = lineOf(run, 'large');
      assert.equal(l.n, n);
      assert.equal(l.sha, want, `rank ${run.rank}`);
    }
    console.log(
      `8M-float allReduce over 3 processes: ${runs.map((r) => lineOf(r, 'large').ms).join(' / ')} ms`,
    );
  });
});

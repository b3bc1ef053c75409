/**
 * Failures across real processes: a rank SIGKILLed mid-collective, a rank gone silent, and rendezvous with
 * a wrong world size or a duplicate rank. Every live rank must fail with a typed error within a bounded
 * time, every later call must reject at once, and every process must still exit by itself.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lineOf, runJob, type RankRun } from './spawn';

const SLACK_MS = 2_000; // process scheduling on a loaded 2-core machine

function survivors(runs: RankRun[], dead: number): RankRun[] {
  return runs.filter((r) => r.rank !== dead);
}

function assertExitedByThemselves(runs: RankRun[]): void {
  for (const r of runs)
    assert.ok(
      !r.hung,
      `rank ${r.rank} did not exit (hang or dangling handle): ${JSON.stringify(r.lines)} ${r.stderr}`,
    );
}

describe('a dead or silent rank', () => {
  for (const [w, victim] of [
    [2, 1],
    [3, 1],
    [3, 0],
    [4, 2],
  ] as const) {
    it(`world ${w}: SIGKILL of rank ${victim} mid-allReduce fails every other rank with PeerLostError`, async () => {
      const timeoutMs = 5_000;
      const runs = await runJob(w, 'loop', {
        env: () => ({ PG_TIMEOUT_MS: String(timeoutMs), PG_N: String(1 << 20) }),
        onLine: (i, line, child) => {
          // Its third allReduce has started: the others are inside it too (or about to be).
          if (i === victim && line.type === 'iter' && line.i === 3) child.kill('SIGKILL');
        },
      });
      assertExitedByThemselves(runs);
      assert.equal(runs[victim]!.signal, 'SIGKILL');
      for (const r of survivors(runs, victim)) {
        const failed = lineOf(r, 'failed');
        assert.equal(failed.name, 'PeerLostError', `rank ${r.rank}: ${JSON.stringify(failed)}`);
        assert.equal(failed.peer, victim, `rank ${r.rank} names the dead rank: ${failed.message}`);
        assert.match(String(failed.message), new RegExp(`rank ${victim}`));
        assert.equal(failed.exitCode, 1);
        assert.ok((failed.ms as number) < timeoutMs + SLACK_MS, `rank ${r.rank} took ${failed.ms} ms`);
        const later = lineOf(r, 'after');
        assert.equal(later.name, 'ProcessGroupBrokenError');
        assert.equal(later.cause, 'PeerLostError');
        assert.ok((later.ms as number) < 100, `a later call rejects at once (${later.ms} ms)`);
        assert.equal(r.code, 1);
      }
    });
  }

  it('world 3: a rank that goes silent makes the others fail with CollectiveTimeoutError after timeoutMs', async () => {
    const timeoutMs = 1_500;
    const runs = await runJob(3, 'stall', {
      env: () => ({
        PG_TIMEOUT_MS: String(timeoutMs),
        PG_STALL_RANK: '2',
        PG_STALL_MS: String(timeoutMs + 2_500),
      }),
    });
    assertExitedByThemselves(runs);
    for (const r of survivors(runs, 2)) {
      const failed = lineOf(r, 'failed');
      assert.equal(failed.name, 'CollectiveTimeoutError', JSON.stringify(failed));
      assert.deepEqual(failed.waitingFor, [2], `rank ${r.rank} names the silent rank: ${failed.message}`);
      assert.ok((failed.ms as number) >= timeoutMs - 50, `no earlier than the timeout (${failed.ms} ms)`);
      assert.ok((failed.ms as number) < timeoutMs + SLACK_MS, `bounded (${failed.ms} ms)`);
      assert.equal(lineOf(r, 'after').name, 'ProcessGroupBrokenError');
    }
    // The silent rank heard the abort while it slept: its next call fails at once with the root cause.
    const silent = lineOf(runs[2]!, 'failed');
    assert.equal(silent.name, 'ProcessGroupBrokenError', JSON.stringify(silent));
    assert.equal(silent.cause, 'CollectiveTimeoutError');
    assert.ok((silent.ms as number) < 100, `rejected at once (${silent.ms} ms)`);
  });
});

describe('rendezvous errors', () => {
  it('a rank started with another world size is rejected, and the whole job stops with a clear error', async () => {
    const runs = await runJob(3, 'join', {
      // The bad rank starts late, so rank 1 has joined and must be told that the job is off.
      env: (i) => ({
        PG_CONNECT_TIMEOUT_MS: '15000',
        ...(i === 2 ? { WORLD_SIZE: '4', PG_START_DELAY_MS: '1500' } : {}),
      }),
      limitMs: 30_000,
    });
    assertExitedByThemselves(runs);
    const t = (i: number) => lineOf(runs[i]!, 'init-failed');
    assert.equal(t(2).reason, 'world-size-mismatch');
    assert.match(
      String(t(2).message),
      /rejected by rank 0: rank 2 .* world size 4, but rank 0 has world size 3/,
    );
    assert.equal(t(0).reason, 'world-size-mismatch');
    assert.equal(t(0).exitCode, 2);
    assert.equal(runs[0]!.code, 2);
    assert.equal(t(1).reason, 'aborted', JSON.stringify(t(1)));
    assert.match(String(t(1).message), /rank 0 aborted the rendezvous: .*world size 4/);
    for (const i of [0, 1, 2])
      assert.ok((t(i).ms as number) < 10_000, `fails fast, not at the connect timeout (${t(i).ms} ms)`);
  });

  it('two processes claiming the same rank: the job stops with duplicate-rank', async () => {
    const runs = await runJob(3, 'join', {
      processes: 3,
      env: (i) => ({ RANK: String(i === 2 ? 1 : i), PG_CONNECT_TIMEOUT_MS: '15000' }),
      limitMs: 30_000,
    });
    assertExitedByThemselves(runs);
    const failures = runs.map((r) => lineOf(r, 'init-failed'));
    assert.equal(failures[0]!.reason, 'duplicate-rank');
    assert.match(String(failures[0]!.message), /rank 1 was claimed twice/);
    // One of the two rank-1 processes was rejected for the duplicate; the other was told the job aborted.
    const reasons = [failures[1]!.reason, failures[2]!.reason].sort();
    assert.deepEqual(reasons, ['aborted', 'duplicate-rank']);
    for (const f of failures) assert.ok((f.ms as number) < 10_000, `fails fast (${f.ms} ms)`);
  });
});

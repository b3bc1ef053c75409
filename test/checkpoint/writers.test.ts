/**
 * Two writers of one directory at once, many rounds, on a local folder, on versitygw and on moto.
 *
 * - Exact replays of one step write the same bytes (no times or hosts in meta): they share the files, and
 *   the manifest, written once, picks one winner.
 * - Writers of different bytes hold writer leases (checkpoint/writer.ts): a second writer takes the
 *   directory over at once with a higher epoch; the first is fenced at its commit, and the second removes
 *   the first one's files only once the first can no longer write. Exactly one commits, the committed step
 *   holds one writer's bytes alone, and nothing committed ever changes.
 * - Two `ckpt train` runs: the second is refused at start, exit 2, naming the first.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  acquireWriter,
  AlreadyCommittedError,
  commitCheckpoint,
  committedSteps,
  configureS3,
  FileConflictError,
  manifestFile,
  modelFile,
  openStore,
  optimFile,
  removingKey,
  saveCheckpoint,
  verifyCheckpoint,
  writeCheckpointFiles,
  WriterConflictError,
  WriterFencedError,
  WriterLeaseExpiredError,
  type FenceToken,
  type Location,
} from '../../checkpoint';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

const ROUNDS = 6;
/**
 * Short leases (renewed every quarter: a loaded machine and a Python S3 server need the slack), and no
 * clock allowance (one host), so that a round waits a second or two at most.
 */
let TTL = 1000;
process.env.CKPT_CLOCK_SKEW_MS = '0';

type Outcome = 'won' | 'already-committed' | 'fenced' | 'conflict' | 'expired';

async function write(dir: Location, step: number, seed: number, fence?: FenceToken): Promise<Outcome> {
  try {
    const result = await saveCheckpoint(
      dir,
      step,
      { model: tinyModel(seed), optimizer: tinyOptimizer(seed), meta: { ...tinyMeta(), seed } },
      { fence },
    );
    assert.equal(result.committed, true);
    return 'won';
  } catch (err) {
    if (err instanceof AlreadyCommittedError) return 'already-committed';
    if (err instanceof WriterFencedError) return 'fenced';
    if (err instanceof WriterConflictError || err instanceof FileConflictError) return 'conflict';
    if (err instanceof WriterLeaseExpiredError) return 'expired';
    throw err;
  }
}

/** The bytes of every file of a committed step, to check that nothing changes after the race. */
async function committedBytes(dir: Location, step: number): Promise<Record<string, string>> {
  const store = openStore(dir);
  const manifest = JSON.parse((await store.read(manifestFile(step))).toString());
  const out: Record<string, string> = {};
  for (const name of Object.keys(manifest.files)) out[name] = (await store.read(name)).toString('base64');
  return out;
}

const TINY = ['--depth', '1', '--n-embd', '16', '--seq-len', '16', '--batch', '2', '--steps', '4'];

function racers(where: () => Location, env: () => NodeJS.ProcessEnv = () => ({}), cliRounds = 2) {
  it('two ckpt train runs on one directory: one trains, the other exits 2 in one line naming it', async () => {
    for (let round = 0; round < cliRounds; round++) {
      const dir = where();
      const runs = await Promise.all([
        ckptAsync(['train', '--dir', String(dir), ...TINY, '--seed', '1'], env()),
        ckptAsync(['train', '--dir', String(dir), ...TINY, '--seed', '2'], env()),
      ]);
      const codes = runs.map((r) => r.code).sort();
      assert.deepEqual(codes, [0, 2], `round ${round}: ${runs.map((r) => r.stderr).join('\n')}`);
      const loser = runs.find((r) => r.code === 2)!;
      const errors = loser.stderr.split('\n').filter((l) => l.startsWith('ckpt: error:'));
      assert.equal(errors.length, 1, loser.stderr);
      // Refused by the lease, or (starting after the other had finished) by the checkpoints it left.
      assert.match(
        errors[0]!,
        /is being written by .*\(ckpt train\) \(writer epoch 1\).*--take-over|already has checkpoints/,
      );
      for (const step of await committedSteps(dir))
        assert.equal((await verifyCheckpoint(dir, step)).ok, true, `round ${round}, step ${step}`);
      // The winner released the directory: a later run takes it without --take-over.
      const again = await ckptAsync(
        ['train', '--dir', String(dir), ...TINY, '--steps', '6', '--resume'],
        env(),
      );
      assert.equal(again.code, 0, again.stderr);
    }
  });

  it('identical writers without leases: exactly one commits, the other is told the step is committed', async () => {
    const reference = where();
    assert.equal(await write(reference, 4, 1), 'won');
    const expected = await committedBytes(reference, 4);
    for (let round = 0; round < ROUNDS; round++) {
      const dir = where();
      const outcomes = await Promise.all([write(dir, 4, 1), write(dir, 4, 1)]);
      assert.deepEqual([...outcomes].sort(), ['already-committed', 'won'], `round ${round}: ${outcomes}`);
      assert.deepEqual(await committedSteps(dir), [4]);
      assert.equal((await verifyCheckpoint(dir, 4)).ok, true, `round ${round}`);
      assert.deepEqual(await committedBytes(dir, 4), expected, `round ${round}: one writer's bytes alone`);
    }
  });

  it('writers of different bytes, the second taking over at once: exactly one commits, its bytes alone', async () => {
    const expected: Record<number, Record<string, string>> = {};
    for (const seed of [1, 2]) {
      const reference = where();
      assert.equal(await write(reference, 4, seed), 'won');
      expected[seed] = await committedBytes(reference, 4);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const dir = where();
      const first = await acquireWriter(dir, { ttlMs: TTL });
      first.startRenewing();
      const outcomes = await Promise.all([
        write(dir, 4, 1, first.token),
        (async () => {
          const second = await acquireWriter(dir, { ttlMs: TTL, takeOver: 'always' });
          second.startRenewing();
          try {
            return await write(dir, 4, 2, second.token);
          } finally {
            await second.release();
          }
        })(),
      ]);
      first.stopRenewing();
      const winners = outcomes.filter((o) => o === 'won');
      assert.equal(winners.length, 1, `round ${round}: ${outcomes}`);
      const winner = outcomes[0] === 'won' ? 1 : 2;
      // The first writer either committed before the takeover (then the second is told so), or is fenced.
      assert.ok(
        winner === 1
          ? outcomes[1] === 'already-committed'
          : ['fenced', 'conflict', 'expired'].includes(outcomes[0]),
        `round ${round}: ${outcomes}`,
      );
      assert.deepEqual(await committedSteps(dir), [4]);
      assert.equal((await verifyCheckpoint(dir, 4)).ok, true, `round ${round}`);
      const committed = await committedBytes(dir, 4);
      assert.deepEqual(committed, expected[winner], `round ${round}: the winner's bytes alone`);
      // The loser, trying again with its own bytes, changes nothing.
      assert.notEqual(await write(dir, 4, winner === 1 ? 2 : 1), 'won');
      assert.deepEqual(await committedBytes(dir, 4), committed, `round ${round}: nothing committed changed`);
    }
  });

  it('a writer whose lease ran out does not commit; the next one takes the directory without --take-over', async () => {
    const dir = where();
    const lapsed = await acquireWriter(dir, { ttlMs: TTL });
    await new Promise((r) => setTimeout(r, TTL + 50));
    await assert.rejects(
      saveCheckpoint(dir, 2, { model: tinyModel(1), meta: tinyMeta() }, { fence: lapsed.token }),
      (err: unknown) => err instanceof WriterLeaseExpiredError && err.exitCode === 1 && err.retryable,
    );
    assert.deepEqual(await committedSteps(dir), []);
    await assert.rejects(lapsed.renew(), WriterLeaseExpiredError, 'a lapsed lease is never extended');
    const next = await acquireWriter(dir, { ttlMs: TTL });
    assert.equal(next.epoch, 2);
    assert.equal(await write(dir, 2, 1, next.token), 'won');
    await next.release();
  });

  it('a live writer of another run is refused; the holder clears stale files only once the earlier writer stopped', async () => {
    const dir = where();
    const store = openStore(dir);
    const first = await acquireWriter(dir, { ttlMs: 1500, holder: 'first' });
    await assert.rejects(acquireWriter(dir, { ttlMs: TTL }), (err: unknown) => {
      assert.ok(err instanceof WriterConflictError);
      assert.equal(err.exitCode, 2);
      assert.match(err.message, /is being written by first \(writer epoch 1\)/);
      return true;
    });
    // The first writer published part of step 6 (other bytes than the next writer's), then stopped renewing.
    await writeCheckpointFiles(dir, 6, { model: tinyModel(9), meta: tinyMeta() }, { fence: first.token });
    const second = await acquireWriter(dir, { ttlMs: 5000, takeOver: 'always' });
    const clearing = second.clearUncommitted(store, 4);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await store.exists(modelFile(6)), true, 'kept while the first writer may still write');
    assert.deepEqual(await clearing, [6]);
    assert.equal(await store.exists(modelFile(6)), false);
    assert.equal(await write(dir, 6, 2, second.token), 'won');
    await assert.rejects(
      saveCheckpoint(dir, 8, { model: tinyModel(1), meta: tinyMeta() }, { fence: first.token }),
      (err: unknown) => err instanceof WriterFencedError || err instanceof WriterLeaseExpiredError,
    );
    assert.deepEqual(await committedSteps(dir), [6]);
    await second.release();
  });
}

describe('two writers of one directory: a local folder', () => {
  racers(() => tempDir());

  it('an earlier writer that announced removals makes the next commit wait for it, then re-check its files', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    const earlier = await acquireWriter(dir, { ttlMs: 800, holder: 'earlier' });
    const later = await acquireWriter(dir, { ttlMs: 10_000, takeOver: 'always' });
    // The earlier writer announced that it removes files (and was cut off before it said it was done).
    await store.put(removingKey(earlier.epoch), Buffer.from('x\n'));
    const committed = write(dir, 2, 1, later.token);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await committedSteps(dir), [], 'no commit while the earlier writer may still remove');
    assert.equal(await committed, 'won');
    assert.equal((await verifyCheckpoint(dir, 2)).ok, true);

    // Had it replaced one of the later writer's files meanwhile, the later writer would not commit.
    await store.put(removingKey(earlier.epoch), Buffer.from('x\n'));
    const files = await writeCheckpointFiles(
      dir,
      4,
      { model: tinyModel(2), meta: tinyMeta() },
      { fence: later.token },
    );
    await store.delete(modelFile(4));
    await store.put(modelFile(4), Buffer.from('the earlier writer’s bytes'));
    await assert.rejects(
      commitCheckpoint(dir, 4, files, { fence: later.token }),
      (err: unknown) => err instanceof FileConflictError && err.file === modelFile(4) && err.retryable,
    );
    assert.deepEqual(await committedSteps(dir), [2]);
    await later.release();
  });

  it('a rank other than 0 never removes a file: other bytes under its name are a retryable conflict', async () => {
    const dir = tempDir();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, optimFile(2, 1)), 'another attempt of rank 1');
    await assert.rejects(
      writeCheckpointFiles(
        dir,
        2,
        { optimizer: tinyOptimizer(1, 1), meta: tinyMeta() },
        { rank: 1, worldSize: 2 },
      ),
      (err: unknown) => err instanceof FileConflictError && err.retryable && err.file === optimFile(2, 1),
    );
  });
});

for (const kind of ['versitygw', 'moto'] as const) {
  describe(`two writers of one directory: S3 (${kind})`, () => {
    let server: S3TestServer;
    let n = 0;
    before(async () => {
      TTL = 2000;
      server = await startS3Server(kind);
      configureS3(server.options());
    });
    after(async () => {
      TTL = 1000;
      configureS3();
      await server?.stop();
    });
    // The CLI race once per server: each round starts four processes that load the model code.
    racers(
      () => `s3://${server.bucket}/writers/${process.pid}-${n++}/base_checkpoints/d1`,
      () => server.env(),
      1,
    );
  });
}

/**
 * Two writers of one step at once, many rounds, on a local folder and on the real S3 server. Two exact
 * replays of one step write the same bytes, meta included (no times or hosts in it), so they share the
 * files and the manifest, written once, picks one winner: the committed step always verifies and the loser
 * is told the step is committed. (Writers of different bytes need the writer lease: not yet.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  AlreadyCommittedError,
  committedSteps,
  configureS3,
  openStore,
  saveCheckpoint,
  verifyCheckpoint,
  type Location,
} from '../../checkpoint';
import { ckptAsync } from '../helpers/cli';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

const ROUNDS = 12;

type Outcome = 'won' | 'already-committed';

async function write(dir: Location, step: number, seed: number, label: string): Promise<Outcome> {
  try {
    const result = await saveCheckpoint(dir, step, {
      model: tinyModel(seed),
      optimizer: tinyOptimizer(seed),
      meta: { ...tinyMeta(), writer: label },
    });
    assert.equal(result.committed, true);
    return 'won';
  } catch (err) {
    if (err instanceof AlreadyCommittedError) return 'already-committed';
    throw err;
  }
}

/** The bytes of every file of a committed step, to check that nothing changes after the race. */
async function committedBytes(dir: Location, step: number): Promise<Record<string, string>> {
  const store = openStore(dir);
  const manifest = JSON.parse(
    (await store.read(`manifest_${String(step).padStart(6, '0')}.json`)).toString(),
  );
  const out: Record<string, string> = {};
  for (const name of Object.keys(manifest.files)) out[name] = (await store.read(name)).toString('base64');
  return out;
}

const TINY = [
  '--depth',
  '1',
  '--n-embd',
  '16',
  '--seq-len',
  '16',
  '--batch',
  '2',
  '--steps',
  '4',
  '--save-every',
  '2',
];

function racers(where: () => Location, env: () => NodeJS.ProcessEnv = () => ({})) {
  it('two identical ckpt train runs on one directory: every committed step verifies', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = where();
      const runs = await Promise.all([
        ckptAsync(['train', '--dir', String(dir), ...TINY], env()),
        ckptAsync(['train', '--dir', String(dir), ...TINY], env()),
      ]);
      for (const run of runs) {
        // The loser of a step is told it is committed (or, starting late, that the tag has checkpoints).
        if (run.code !== 0) assert.match(run.stderr, /already committed|already has checkpoints/, run.stderr);
      }
      assert.ok(runs.some((r) => r.code === 0) || (await committedSteps(dir)).length > 0, `round ${round}`);
      for (const step of await committedSteps(dir)) {
        assert.equal((await verifyCheckpoint(dir, step)).ok, true, `round ${round}, step ${step}`);
      }
    }
  });

  it('identical writers: exactly one commits, the other is told the step is committed', async () => {
    const reference = where();
    assert.equal(await write(reference, 4, 1, 'same'), 'won');
    const expected = await committedBytes(reference, 4);
    for (let round = 0; round < ROUNDS; round++) {
      const dir = where();
      const outcomes = await Promise.all([write(dir, 4, 1, 'same'), write(dir, 4, 1, 'same')]);
      assert.deepEqual([...outcomes].sort(), ['already-committed', 'won'], `round ${round}: ${outcomes}`);
      assert.deepEqual(await committedSteps(dir), [4]);
      assert.equal((await verifyCheckpoint(dir, 4)).ok, true, `round ${round}`);
      assert.deepEqual(
        await committedBytes(dir, 4),
        expected,
        `round ${round}: the bytes of one writer alone`,
      );
    }
  });
}

describe('two writers of one step: a local folder', () => {
  racers(() => tempDir());
});

describe('two writers of one step: S3', () => {
  let server: S3TestServer;
  let n = 0;
  before(async () => {
    server = await startS3Server();
    configureS3(server.options());
  });
  after(async () => {
    configureS3();
    await server?.stop();
  });
  racers(
    () => `s3://${server.bucket}/writers/${process.pid}-${n++}/base_checkpoints/d1`,
    () => server.env(),
  );
});

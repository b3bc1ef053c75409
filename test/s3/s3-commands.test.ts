/**
 * A command program on an s3:// root: the Python client stages each step locally and `ckpt commit --from`
 * uploads and commits it; a resumed run loads its checkpoint back from S3 (verified), and the result is
 * the same bytes as the same run on a local directory.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { committedSteps, configureS3, openStore } from '../../checkpoint';
import { ckpt, ROOT } from '../helpers/cli';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

const TRAIN = `python3 ${join(ROOT, 'examples', 'python-mlp', 'train.py')}`;
const FINAL = ['model_000020.safetensors', 'optim_000020_rank0.safetensors'];

let server: S3TestServer;
const local = tempDir('ckpt-s3-commands-');
before(async () => {
  server = await startS3Server();
  configureS3(server.options());
});
after(async () => {
  configureS3();
  await server?.stop();
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

function train(root: string, steps: number, resume: boolean) {
  return ckpt(
    [
      'train',
      '--exec',
      TRAIN,
      '--program',
      'mlp',
      '--root',
      root,
      '--tag',
      'mlp',
      '--steps',
      String(steps),
      '--save-every',
      '5',
      ...(resume ? ['--resume'] : []),
    ],
    server.env(),
  );
}

describe('a command program on S3', () => {
  it('commits through ckpt commit --from, resumes from S3, and ends with the bytes of a local run', async () => {
    const root = `s3://${server.bucket}/runs`;
    const first = train(root, 10, false);
    assert.equal(first.code, 0, first.stderr);
    const second = train(root, 20, true);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /from step 10 to 20/);
    const dir = `${root}/base_checkpoints/mlp`;
    assert.deepEqual(await committedSteps(dir), [5, 10, 15, 20]);
    assert.equal(ckpt(['verify', dir], server.env()).code, 0);

    const reference = train(local, 20, false);
    assert.equal(reference.code, 0, reference.stderr);
    const store = openStore(dir);
    for (const file of FINAL) {
      assert.equal(
        sha(await store.read(file)),
        sha(readFileSync(join(local, 'base_checkpoints', 'mlp', file))),
        file,
      );
    }
  });
});

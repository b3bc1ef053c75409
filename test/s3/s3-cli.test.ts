/**
 * The `ckpt` CLI on an s3:// root, as a real process that finds the server through the standard AWS_*
 * variables only: list, last-step, inspect, verify, prune, gc and copy, a missing bucket, and no secret in
 * any output.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { committedSteps, configureS3, modelFile, openStore, saveCheckpoint } from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

const CLI = join(__dirname, '..', '..', 'bin', 'ckpt.js');

let server: S3TestServer;
let root: string;
let dir: string;
before(async () => {
  server = await startS3Server();
  configureS3(server.options());
  root = `s3://${server.bucket}/runs`;
  dir = `${root}/base_checkpoints/d2`;
  for (const step of [10, 20, 30]) {
    await saveCheckpoint(dir, step, {
      model: tinyModel(step),
      optimizer: tinyOptimizer(step),
      meta: tinyMeta({ step }),
    });
  }
});
after(async () => {
  configureS3();
  await server?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function ckpt(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...server.env(), CKPT_LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      // Whatever a command prints, credentials never appear in it.
      assert.ok(
        !`${stdout}${stderr}`.includes(server.secretAccessKey),
        `secret printed by ckpt ${args.join(' ')}`,
      );
      resolve({ code, stdout, stderr });
    });
  });
}

describe('ckpt on s3://', () => {
  it('list shows the tags and steps under an s3:// root', async () => {
    const run = await ckpt('list', root, '--json');
    assert.equal(run.code, 0, run.stderr);
    const listed = JSON.parse(run.stdout) as {
      tags: Array<{ tag: string; checkpoints: Array<{ step: number }> }>;
    };
    assert.deepEqual(
      listed.tags.map((t) => [t.tag, t.checkpoints.map((c) => c.step)]),
      [['d2', [10, 20, 30]]],
    );
    const table = await ckpt('list', root);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /d2\s+30\s+committed/);
  });

  it('last-step, inspect and verify', async () => {
    const last = await ckpt('last-step', dir);
    assert.deepEqual([last.code, last.stdout.trim()], [0, '30'], last.stderr);
    const inspect = await ckpt('inspect', dir, '--step', '20', '--json');
    assert.equal(inspect.code, 0, inspect.stderr);
    const info = JSON.parse(inspect.stdout) as {
      step: number;
      verified: boolean;
      files: Record<string, { tensors?: unknown[] }>;
    };
    assert.equal(info.step, 20);
    assert.equal(info.verified, true);
    assert.equal(info.files[modelFile(20)]?.tensors?.length, 4);
    const verify = await ckpt('verify', dir);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stdout.match(/^ok\s+step/gm)?.length, 3);
  });

  it('copy s3 → local, then prune and gc on S3', async () => {
    const local = tempDir();
    const copy = await ckpt('copy', dir, local);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(copy.stdout.match(/^copied\s+step/gm)?.length, 3);
    assert.ok(readdirSync(local).includes('manifest_000030.json'));
    const again = await ckpt('copy', dir, local, '--step', '30');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /skipped step 30: already committed/);

    const prune = await ckpt('prune', dir, '--keep-last', '1', '--json');
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual((JSON.parse(prune.stdout) as { deleted: number[] }).deleted.sort(), [10, 20]);
    assert.deepEqual(await committedSteps(dir), [30]);

    await openStore(dir).put(modelFile(40), Buffer.from('orphan'));
    const gc = await ckpt('gc', dir, '--grace', '0');
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, /removed\s+model_000040\.safetensors/);
    assert.equal(await openStore(dir).exists(modelFile(40)), false);

    const back = await ckpt('copy', local, `${root}/restored/d2`);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(await committedSteps(`${root}/restored/d2`), [10, 20, 30]);
  });

  it('a missing bucket is a one-line error naming the bucket', async () => {
    for (const args of [
      ['list', 's3://no-such-bucket-zz/runs'],
      ['last-step', 's3://no-such-bucket-zz/runs/d2'],
    ]) {
      const run = await ckpt(...args);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /^ckpt: error: .*bucket "no-such-bucket-zz" does not exist/m);
      assert.equal(run.stdout, '');
    }
  });
});

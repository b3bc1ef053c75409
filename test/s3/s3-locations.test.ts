/**
 * A location that starts like an s3:// URL but is not one ("s3://" without a bucket, "s3:/bucket/x",
 * "s3:bucket") is bad input, exit 2, with one line naming the value: it used to be taken as a local
 * folder named "s3:", so a copy or a training run meant for a bucket landed on the local disk and exited 0.
 * No server is needed: nothing may be contacted or written.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import {
  absoluteLocation,
  checkLocation,
  InvalidArgumentError,
  joinLocation,
  openStore,
  saveCheckpoint,
} from '../../checkpoint';
import { loadConfig } from '../../temporal.config';
import { ROOT, type CliResult } from '../helpers/cli';
import { tinyMeta, tinyModel } from '../helpers/fixtures';
import { withoutS3Env } from '../helpers/s3-server';
import { tempDir } from '../helpers/tmp';

const MALFORMED = [
  's3://',
  's3:///runs/d1',
  's3:/bucket/runs',
  's3:bucket',
  'S3:bucket/runs',
  's3:',
  'file:ckpt',
];

/** `ckpt ARGS` run in `cwd` (so anything it wrongly writes to a relative path lands there). */
function ckptIn(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'ckpt.js'), ...args], {
      cwd,
      env: { ...withoutS3Env(process.env), ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => done({ code: code ?? -1, stdout, stderr }));
  });
}

function assertRefused(fn: () => unknown, value: string): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof InvalidArgumentError && e.exitCode === 2 && e.message.includes(`"${value}"`),
    value,
  );
}

describe('malformed s3 locations', () => {
  it('are refused wherever a location is parsed: open, join, make absolute, CKPT_ROOT', () => {
    for (const value of MALFORMED) {
      assertRefused(() => checkLocation(value), value);
      assertRefused(() => openStore(value), value);
      assertRefused(() => joinLocation(value, 'base_checkpoints', 'd1'), value);
      assertRefused(() => absoluteLocation(value), value);
      assertRefused(() => loadConfig({ CKPT_ROOT: value }), value);
    }
    assert.throws(() => loadConfig({ CKPT_ROOT: 's3:bucket' }), { field: 'CKPT_ROOT' });
    assert.match(
      (() => {
        try {
          return checkLocation('s3://', 'root');
        } catch (e) {
          return (e as Error).message;
        }
      })(),
      /^root "s3:\/\/" names no bucket: write s3:\/\/bucket\/prefix$/,
    );
  });

  it('leave well-formed locations alone, including local folders that merely contain a colon', () => {
    for (const value of [
      's3://bucket/runs',
      's3://bucket',
      './s3:bucket',
      'runs/s3:x',
      '/tmp/ckpt',
      'C:\\ckpt',
    ])
      assert.equal(checkLocation(value), value);
    assert.equal(absoluteLocation('s3://bucket/runs'), 's3://bucket/runs');
    assert.equal(absoluteLocation('./s3:bucket'), resolve('s3:bucket'));
    assert.equal(joinLocation('s3://bucket/runs/', 'base_checkpoints'), 's3://bucket/runs/base_checkpoints');
  });

  it('make the CLI exit 2 with one line naming the value, and write nothing', async () => {
    const source = tempDir();
    await saveCheckpoint(source, 10, { model: tinyModel(1), meta: tinyMeta() });
    const cwd = tempDir();
    const runs: Array<[string[], NodeJS.ProcessEnv, string]> = [
      [['last-step', 's3:/bucket/runs/d1'], {}, 's3:/bucket/runs/d1'],
      [['list', 's3://'], {}, 's3://'],
      [['verify', 's3:bucket/d1'], {}, 's3:bucket/d1'],
      [['copy', source, 's3:/bucket/runs/d1'], {}, 's3:/bucket/runs/d1'],
      [['copy', source, 's3:bucket'], {}, 's3:bucket'],
      [['list', 'runs'], { CKPT_ROOT: 's3:bucket' }, 's3:bucket'],
    ];
    for (const [args, env, value] of runs) {
      const run = await ckptIn(cwd, args, env);
      const what = `ckpt ${args.join(' ')} ${JSON.stringify(env)}`;
      assert.equal(run.code, 2, `${what}: ${run.stderr}`);
      const lines = run.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${what}: ${run.stderr}`);
      assert.ok(
        lines[0]!.startsWith('ckpt: error: ') && lines[0]!.includes(`"${value}"`),
        `${what}: ${lines[0]}`,
      );
      assert.equal(run.stdout, '');
    }
    assert.deepEqual(readdirSync(cwd), [], 'nothing was written to a local folder named "s3:"');
  });
});

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { committedSteps, loadCheckpoint } from '../../checkpoint';
import { evaluateCheckpoint } from '../../train/evaluate';
import { ckpt, ckptAsync } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

// A small model so the whole file runs in well under a minute.
const MODEL = ['--depth', '1', '--n-embd', '32', '--seq-len', '32', '--batch', '4', '--seed', '7'];

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function dirOf(root: string, tag: string): string {
  return join(root, 'base_checkpoints', tag);
}

function assertSameState(a: string, b: string, step: number): void {
  const pad = String(step).padStart(6, '0');
  for (const file of [`model_${pad}.safetensors`, `optim_${pad}_rank0.safetensors`]) {
    assert.equal(sha(join(a, file)), sha(join(b, file)), `${file} differs`);
  }
}

describe('exact resume', () => {
  it('0→12 in one process equals 0→8 then --resume to 12 in a new process, bit for bit', async () => {
    const root = tempDir();
    const t0 = Date.now();
    const [straight, first] = await Promise.all([
      ckptAsync([
        'train',
        '--root',
        root,
        '--tag',
        'straight',
        ...MODEL,
        '--steps',
        '12',
        '--save-every',
        '4',
      ]),
      ckptAsync(['train', '--root', root, '--tag', 'resumed', ...MODEL, '--steps', '8', '--save-every', '4']),
    ]);
    assert.equal(straight.code, 0, straight.stderr);
    assert.equal(first.code, 0, first.stderr);
    const second = ckpt([
      'train',
      '--root',
      root,
      '--tag',
      'resumed',
      '--resume',
      '--steps',
      '12',
      '--save-every',
      '4',
    ]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resuming .* from step 8/);
    assert.doesNotMatch(second.stderr, /trajectory will differ|from scratch/);
    assertSameState(dirOf(root, 'straight'), dirOf(root, 'resumed'), 12);
    // Saves every K steps and at the end, never at step 0 nor at the resume step.
    assert.deepEqual(await committedSteps(dirOf(root, 'resumed')), [4, 8, 12]);
    const meta = (await loadCheckpoint(dirOf(root, 'resumed'), 12, { loadModel: false })).meta;
    assert.equal((meta.dataloader_state as { sample_index: number }).sample_index, 48);
    assert.ok(Array.isArray(meta.loss_history) && (meta.loss_history as unknown[]).length === 4);
    process.stderr.write(`exact-resume test: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

    // --resume-from-step replays from an older step and reaches the same bits.
    const replay = ckpt([
      'train',
      '--root',
      root,
      '--tag',
      'resumed',
      '--resume-from-step',
      '4',
      '--steps',
      '12',
    ]);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stderr, /already committed/);
    const copy = tempDir();
    const fromFour = ckpt([
      'train',
      '--root',
      copy,
      '--tag',
      'straight',
      ...MODEL,
      '--steps',
      '4',
      '--save-every',
      '4',
    ]);
    assert.equal(fromFour.code, 0, fromFour.stderr);
    const resumed = ckpt([
      'train',
      '--root',
      copy,
      '--tag',
      'straight',
      '--resume-from-step',
      '4',
      '--steps',
      '12',
      '--save-every',
      '6',
    ]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assertSameState(dirOf(root, 'straight'), dirOf(copy, 'straight'), 12);
  });
});

describe('resume on another backend', () => {
  it('continues from the checkpoint, records the new backend and says the trajectory will differ', async () => {
    const root = tempDir();
    const args = ['train', '--root', root, '--tag', 'moved', ...MODEL, '--save-every', '2'];
    const first = ckpt([...args, '--steps', '2']);
    assert.equal(first.code, 0, first.stderr);
    const dir = dirOf(root, 'moved');
    const savedOn = (await loadCheckpoint(dir, 2, { loadModel: false })).meta.backend;
    const other = savedOn === 'cpu' ? 'wasm' : 'cpu';
    const second = ckpt(['train', '--root', root, '--tag', 'moved', '--resume', '--steps', '4'], {
      CKPT_BACKEND: other,
    });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resuming .* from step 2/);
    assert.doesNotMatch(second.stderr, /from scratch/);
    assert.match(
      second.stderr,
      new RegExp(
        `step 2 was saved on the ${savedOn} backend and resumes on ${other}: the trajectory will differ`,
      ),
    );
    assert.equal((await loadCheckpoint(dir, 4, { loadModel: false })).meta.backend, other);
  });
});

describe('train refuses what would lose or mix work', () => {
  it('a tag with checkpoints needs --resume; contradicting flags name the field; --steps at or below the last does nothing', async () => {
    const root = tempDir();
    assert.equal(ckpt(['train', '--root', root, ...MODEL, '--steps', '2', '--save-every', '2']).code, 0);
    const again = ckpt(['train', '--root', root, ...MODEL, '--steps', '4']);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already has checkpoints .*--resume/);
    const clash = ckpt([
      'train',
      '--root',
      root,
      '--depth',
      '1',
      '--n-embd',
      '64',
      '--resume',
      '--steps',
      '4',
    ]);
    assert.equal(clash.code, 2);
    assert.match(clash.stderr, /--n-embd 64 contradicts .*n-embd = 32/);
    const badData = ckpt([
      'train',
      '--root',
      root,
      '--depth',
      '1',
      '--resume',
      '--steps',
      '4',
      '--data',
      join(__dirname, '..', '..', 'package.json'),
    ]);
    assert.equal(badData.code, 2);
    assert.match(badData.stderr, /is not the data the checkpoint was trained on/);
    const nothing = ckpt(['train', '--root', root, '--depth', '1', '--resume', '--steps', '2']);
    assert.equal(nothing.code, 0);
    assert.match(nothing.stderr, /nothing to do/);
    assert.deepEqual(
      readdirSync(join(root, 'base_checkpoints', 'd1')).filter((f) => f.startsWith('manifest')),
      ['manifest_000002.json'],
    );
  });

  it('--resume with no checkpoint yet starts from scratch and says so', () => {
    const root = tempDir();
    const res = ckpt(['train', '--root', root, ...MODEL, '--resume', '--steps', '2']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /no checkpoint .* yet: starting from scratch/);
  });
});

describe('evaluation and sampling', () => {
  it('eval prints val_bpb, writes eval_<step>.json; sample is deterministic for a seed', async () => {
    const root = tempDir();
    assert.equal(ckpt(['train', '--root', root, ...MODEL, '--steps', '3', '--save-every', '3']).code, 0);
    const dir = dirOf(root, 'd1');
    const evalRes = ckpt(['eval', dir, '--json']);
    assert.equal(evalRes.code, 0, evalRes.stderr);
    const parsed = JSON.parse(evalRes.stdout);
    assert.equal(typeof parsed.val_bpb, 'number');
    assert.ok(parsed.val_bpb > 0 && parsed.val_bpb < 10);
    const onDisk = JSON.parse(readFileSync(join(dir, 'eval_000003.json'), 'utf8'));
    assert.equal(onDisk.val_bpb, parsed.val_bpb);
    assert.equal(onDisk.step, 3);
    const plain = ckpt(['eval', dir, '--step', '3']);
    assert.equal(Number(plain.stdout.trim()), parsed.val_bpb);
    // The library reports progress per batch of held-out windows, ending at the total.
    const progress: Array<[number, number]> = [];
    const lib = await evaluateCheckpoint(dir, 3, {
      onProgress: (done, total) => progress.push([done, total]),
    });
    assert.equal(lib.metrics.val_bpb, parsed.val_bpb);
    assert.ok(progress.length > 0);
    assert.deepEqual(progress.at(-1), [progress[0]![1], progress[0]![1]]);
    assert.ok(progress.every(([d], i) => i === 0 || d > progress[i - 1]![0]));
    assert.ok(!readdirSync(dir).some((f) => f.startsWith('lease_')), 'the eval lease is released');

    const args = [
      'sample',
      dir,
      '--prompt',
      'The model',
      '--tokens',
      '20',
      '--temperature',
      '0.9',
      '--seed',
      '3',
    ];
    const [a, b] = await Promise.all([ckptAsync(args), ckptAsync(args)]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    assert.ok(a.stdout.startsWith('The model'));
  });
});

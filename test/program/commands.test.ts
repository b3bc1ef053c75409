/**
 * Command programs outside a pipeline: `ckpt train --exec` with the Python example (exact resume), a
 * command killed between its files (nothing committed; the next run resumes and replaces the stale
 * file under its lease), the exit-code contract, and `ckpt commit`'s refusals (nothing published).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { committedSteps } from '../../checkpoint';
import { ckpt, ckptAsync, ROOT } from '../helpers/cli';
import { sha256 } from '../helpers/temporal';

const TRAIN = `python3 ${join(ROOT, 'examples', 'python-mlp', 'train.py')}`;
const EVAL = `python3 ${join(ROOT, 'examples', 'python-mlp', 'eval.py')}`;
const PY_CLIENT = join(ROOT, 'python');

let tmp: string;
const dirOf = (root: string, tag = 'mlp') => join(root, 'base_checkpoints', tag);
const pad = (step: number) => String(step).padStart(6, '0');
const finalFiles = (dir: string, step: number, ranks = 1) =>
  [
    `model_${pad(step)}.safetensors`,
    ...Array.from({ length: ranks }, (_, r) => `optim_${pad(step)}_rank${r}.safetensors`),
  ].map((f) => sha256(join(dir, f)));

function train(root: string, steps: number, extra: string[] = [], env: NodeJS.ProcessEnv = {}) {
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
      ...extra,
    ],
    env,
  );
}

/** Files of step `step` written the way the Python client would, into `dir`. */
function writeStep(dir: string, step: number, options: { ranks?: number; meta?: object } = {}): void {
  mkdirSync(dir, { recursive: true });
  const script = `
import json, sys, numpy as np
from safetensors.numpy import save_file
d, step, ranks, meta = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = '%06d' % step
save_file({'w': np.arange(12, dtype=np.float32).reshape(3, 4)}, f'{d}/model_{p}.safetensors')
for r in range(ranks):
    save_file({'m': np.full(4, r, dtype=np.float32)}, f'{d}/optim_{p}_rank{r}.safetensors')
open(f'{d}/meta_{p}.json', 'w').write(meta)
`;
  execFileSync('python3', [
    '-c',
    script,
    dir,
    String(step),
    String(options.ranks ?? 1),
    JSON.stringify(options.meta ?? { step, config: { lr: 0.1 } }),
  ]);
}

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'ckpt-commands-'));
});

describe('ckpt train --exec (the Python example)', () => {
  it('0→20 equals 0→10 then --resume to 20, bit for bit; eval writes the metrics', () => {
    const straight = join(tmp, 'straight');
    const split = join(tmp, 'split');
    const a = train(straight, 20, ['--progress-json']);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /trained mlp from step 0 to 20 .* with program mlp/);
    const b1 = train(split, 10);
    assert.equal(b1.code, 0, b1.stderr);
    const b2 = train(split, 20, ['--resume']);
    assert.equal(b2.code, 0, b2.stderr);
    assert.match(b2.stderr, /from step 10 to 20/);
    assert.deepEqual(finalFiles(dirOf(split), 20), finalFiles(dirOf(straight), 20));
    // Its progress lines become the loop's events: every step, with its own metrics; every commit.
    const events = a.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; step: number; metrics?: Record<string, number> });
    assert.deepEqual(
      events.filter((e) => e.type === 'progress').map((e) => e.step),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    assert.equal(typeof events.find((e) => e.type === 'progress')!.metrics?.accuracy, 'number');
    assert.deepEqual(
      events.filter((e) => e.type === 'saved').map((e) => e.step),
      [5, 10, 15, 20],
    );
    assert.equal(events.at(-1)!.type, 'done');
    const listed = ckpt(['inspect', dirOf(split)]);
    assert.match(listed.stdout, /program mlp v1/);

    const ev = ckpt([
      'eval',
      dirOf(split),
      '--eval-exec',
      EVAL,
      '--metric',
      'accuracy',
      '--mode',
      'max',
      '--json',
    ]);
    assert.equal(ev.code, 0, ev.stderr);
    const result = JSON.parse(ev.stdout) as Record<string, unknown>;
    assert.equal(result.step, 20);
    assert.equal(typeof result.accuracy, 'number');
    assert.deepEqual(result.metric, { name: 'accuracy', mode: 'max' });
    assert.ok(readdirSync(dirOf(split)).includes('eval_000020.json'));
  });

  it('a command killed between its files commits nothing; the next run resumes and replaces the stale file', async () => {
    const root = join(tmp, 'killed');
    const dir = dirOf(root);
    assert.equal(train(root, 5).code, 0);
    // A command that leaves model_000010 (other bytes than the real run's) in the live directory and is
    // SIGKILLed before its meta and its commit.
    const dies = join(tmp, 'dies.py');
    writeFileSync(
      dies,
      [
        'import os, signal, numpy as np',
        'from safetensors.numpy import save_file',
        "d = os.environ['CKPT_DIR']",
        "save_file({'garbage': np.ones(7, dtype=np.float32)}, os.path.join(d, 'model_000010.safetensors'))",
        'os.kill(os.getpid(), signal.SIGKILL)',
      ].join('\n'),
    );
    const killed = ckpt([
      'train',
      '--exec',
      `python3 ${dies}`,
      '--program',
      'mlp',
      '--root',
      root,
      '--tag',
      'mlp',
      '--steps',
      '10',
      '--resume',
    ]);
    assert.equal(killed.code, 1, killed.stderr);
    assert.match(killed.stderr, /was killed by SIGKILL .* retried from the last committed step/);
    assert.deepEqual(await committedSteps(dir), [5]);
    assert.ok(readdirSync(dir).includes('model_000010.safetensors'));
    const resumed = train(root, 10, ['--resume']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /from step 5 to 10/);
    const reference = join(tmp, 'ref10');
    assert.equal(train(reference, 10).code, 0);
    assert.deepEqual(finalFiles(dir, 10), finalFiles(dirOf(reference), 10));
  });

  it('exit 2 fails for good (exit 2), exit 0 without the target committed is a contract error', () => {
    const root = join(tmp, 'codes');
    const script = (body: string) => {
      const file = join(tmp, `c${Math.random().toString(36).slice(2)}.py`);
      writeFileSync(file, body);
      return `python3 ${file}`;
    };
    const two = ckpt([
      'train',
      '--exec',
      script('import sys; sys.exit(2)'),
      '--root',
      root,
      '--tag',
      'two',
      '--steps',
      '5',
    ]);
    assert.equal(two.code, 2, two.stderr);
    assert.match(two.stderr, /exited 2: a failure retrying cannot fix/);
    const zero = ckpt(['train', '--exec', script('pass'), '--root', root, '--tag', 'zero', '--steps', '5']);
    assert.equal(zero.code, 2, zero.stderr);
    assert.match(zero.stderr, /exited 0, but the last committed step is none, not the target 5/);
    const missing = ckpt([
      'train',
      '--exec',
      'no-such-command-here',
      '--root',
      root,
      '--tag',
      'gone',
      '--steps',
      '5',
    ]);
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /could not start no-such-command-here/);
  });

  it('the command sees the documented environment', () => {
    const root = join(tmp, 'env');
    const file = join(tmp, 'env.py');
    writeFileSync(
      file,
      [
        'import json, os, sys',
        "keys = ['CKPT_DIR','CKPT_RESUME_STEP','CKPT_TARGET_STEP','CKPT_SAVE_EVERY','CKPT_SEED','CKPT_CONFIG','CKPT_PROGRAM','CKPT_PROGRESS_FD','CKPT_BIN','CKPT_WRITER','RANK','WORLD_SIZE','LOCAL_RANK']",
        "print(json.dumps({k: os.environ.get(k) for k in keys} | {'path0': os.environ['PYTHONPATH'].split(':')[0], 'cwd': os.getcwd()}), file=sys.stderr)",
        'sys.exit(3)',
      ].join('\n'),
    );
    const res = ckpt([
      'train',
      '--exec',
      `python3 ${file}`,
      '--program',
      'envy',
      '--root',
      root,
      '--tag',
      't',
      '--steps',
      '7',
      '--save-every',
      '3',
      '--seed',
      '11',
      '--config',
      '{"lr":0.5}',
    ]);
    assert.equal(res.code, 1);
    const seen = JSON.parse(/\[envy\] (\{.*\})/.exec(res.stderr)![1]!) as Record<string, string>;
    assert.equal(seen.CKPT_DIR, dirOf(root, 't'));
    assert.equal(seen.CKPT_RESUME_STEP, '');
    assert.equal(seen.CKPT_TARGET_STEP, '7');
    assert.equal(seen.CKPT_SAVE_EVERY, '3');
    assert.equal(seen.CKPT_SEED, '11');
    assert.deepEqual(JSON.parse(seen.CKPT_CONFIG!), { lr: 0.5 });
    assert.equal(seen.CKPT_PROGRAM, 'envy');
    assert.equal(seen.CKPT_PROGRESS_FD, '3');
    assert.match(seen.CKPT_BIN!, /bin\/ckpt\.js$/);
    assert.match(seen.CKPT_WRITER!, /^\d+:[0-9a-f]+$/);
    assert.deepEqual([seen.RANK, seen.WORLD_SIZE, seen.LOCAL_RANK], ['0', '1', '0']);
    assert.equal(seen.path0, PY_CLIENT);
    assert.equal(seen.cwd, ROOT);
  });
});

describe('ckpt commit', () => {
  const commit = (dir: string, args: string[]) => ckpt(['commit', dir, '--program', 'mlp', ...args]);

  it('commits a staging directory, and refuses a step committed before', () => {
    const stage = join(tmp, 'stage-ok');
    const dir = join(tmp, 'ok', 'mlp');
    writeStep(stage, 5);
    writeFileSync(join(stage, 'extra_000005_notes.txt'), 'hello');
    const res = commit(dir, ['--step', '5', '--from', stage, '--json']);
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as { committed: boolean; files: Record<string, unknown> };
    assert.equal(out.committed, true);
    assert.deepEqual(Object.keys(out.files).sort(), [
      'extra_000005_notes.txt',
      'meta_000005.json',
      'model_000005.safetensors',
      'optim_000005_rank0.safetensors',
    ]);
    assert.equal(ckpt(['verify', dir]).code, 0);
    const again = commit(dir, ['--step', '5', '--from', stage]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /step 5 is already committed/);
  });

  const refusals: Array<[string, (stage: string) => void, string[], RegExp]> = [
    [
      'a truncated safetensors file',
      (stage) => {
        writeStep(stage, 5);
        const file = join(stage, 'model_000005.safetensors');
        truncateSync(file, statSync(file).size - 4);
      },
      [],
      /model_000005\.safetensors: not a valid safetensors file: .*describes \d+ bytes but the file has \d+/,
    ],
    [
      'a missing rank file',
      (stage) => {
        writeStep(stage, 5, { ranks: 2 });
        execFileSync('rm', [join(stage, 'optim_000005_rank1.safetensors')]);
      },
      ['--world-size', '2'],
      /optim_000005_rank1\.safetensors missing while other ranks have their optimizer files/,
    ],
    [
      'a name outside the contract',
      (stage) => {
        writeStep(stage, 5);
        writeFileSync(join(stage, 'model_000005.safetensors.bak'), 'x');
      },
      [],
      /"model_000005\.safetensors\.bak" is not a file this commit publishes/,
    ],
    [
      'a symbolic link that leads outside the staging directory',
      (stage) => {
        writeStep(stage, 5);
        symlinkSync('/etc/hostname', join(stage, 'extra_000005_host'));
      },
      [],
      /extra_000005_host is not a regular file \(a symbolic link\)/,
    ],
    [
      'a file of another step',
      (stage) => {
        writeStep(stage, 5);
        writeStep(stage, 6);
      },
      [],
      /"meta_000006\.json" is not a file this commit publishes/,
    ],
    [
      'meta without its config',
      (stage) => writeStep(stage, 5, { meta: { step: 5 } }),
      [],
      /meta_000005\.json: "config" must be an object/,
    ],
    [
      'a missing model file',
      (stage) => {
        writeStep(stage, 5);
        execFileSync('rm', [join(stage, 'model_000005.safetensors')]);
      },
      [],
      /model_000005\.safetensors is missing; nothing was published/,
    ],
  ];
  for (const [what, make, extra, message] of refusals) {
    it(`refuses ${what} (exit 2) and publishes nothing`, () => {
      const stage = join(tmp, `stage-${what.replace(/\W+/g, '-')}`);
      const dir = join(tmp, `refused-${what.replace(/\W+/g, '-')}`, 'mlp');
      make(stage);
      const res = commit(dir, ['--step', '5', '--from', stage, ...extra]);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, message);
      assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
      const left = (() => {
        try {
          return readdirSync(dir).filter((f) => !/^writer_\d+\.json$/.test(f));
        } catch {
          return [];
        }
      })();
      assert.deepEqual(left, []);
    });
  }

  it('two ranks commit their own files; rank 0 writes the manifest once both are there', async () => {
    const stage0 = join(tmp, 'stage-r0');
    const stage1 = join(tmp, 'stage-r1');
    writeStep(stage0, 5, { ranks: 2 });
    mkdirSync(stage1);
    execFileSync('mv', [join(stage0, 'optim_000005_rank1.safetensors'), stage1]);
    const dir = join(tmp, 'ranks', 'mlp');
    const r0 = ckptAsync([
      'commit',
      dir,
      '--program',
      'mlp',
      '--step',
      '5',
      '--rank',
      '0',
      '--world-size',
      '2',
      '--from',
      stage0,
    ]);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await committedSteps(dir), [], 'rank 0 waits for rank 1');
    const r1 = ckpt([
      'commit',
      dir,
      '--program',
      'mlp',
      '--step',
      '5',
      '--rank',
      '1',
      '--world-size',
      '2',
      '--from',
      stage1,
    ]);
    assert.equal(r1.code, 0, r1.stderr);
    const done = await r0;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(await committedSteps(dir), [5]);
    assert.equal(ckpt(['verify', dir]).code, 0);
    // A replay of rank 1's commit (its group retried after rank 0 committed) with the same bytes is done;
    // with other bytes it is refused.
    const again = ckpt([
      'commit',
      dir,
      '--program',
      'mlp',
      '--step',
      '5',
      '--rank',
      '1',
      '--world-size',
      '2',
      '--from',
      stage1,
    ]);
    assert.equal(again.code, 0, again.stderr);
    const stage2 = join(tmp, 'stage-r1-other');
    writeStep(stage2, 5, { ranks: 3 });
    execFileSync('rm', [join(stage2, 'optim_000005_rank1.safetensors')]);
    execFileSync('mv', [
      join(stage2, 'optim_000005_rank2.safetensors'),
      join(stage2, 'optim_000005_rank1.safetensors'),
    ]);
    for (const f of ['model_000005.safetensors', 'meta_000005.json', 'optim_000005_rank0.safetensors'])
      execFileSync('rm', [join(stage2, f)]);
    const other = ckpt([
      'commit',
      dir,
      '--program',
      'mlp',
      '--step',
      '5',
      '--rank',
      '1',
      '--world-size',
      '2',
      '--from',
      stage2,
    ]);
    assert.equal(other.code, 2, other.stderr);
    assert.match(other.stderr, /step 5 is already committed/);
  });
});

/**
 * Training programs other than the GPT: the example under examples/ (a tf.LayersModel with its own
 * tf.train.adam), a program a user writes in a file of their own (loaded by path, needing nothing from this
 * repository), and the refusals that keep one program's checkpoints away from another.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildModel } from '../../model/build';
import { ProgramMismatchError } from '../../program/errors';
import { ckpt, ckptAsync, ROOT } from '../helpers/cli';
import { linearProgram } from '../helpers/linear-program';
import { tempDir } from '../helpers/tmp';

const EXAMPLE = join(ROOT, 'examples', 'mlp-classifier', 'program.ts');

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const pad = (step: number) => String(step).padStart(6, '0');

function assertSameFiles(a: string, b: string, files: string[]): void {
  for (const file of files) assert.equal(sha(join(a, file)), sha(join(b, file)), `${file} differs`);
}

/**
 * A program that owns its optimizer but has no gradients()/applyGradients() (plain SGD in step()), and no
 * defaultTag: the linear program of linear.js beside it, wrapped.
 */
const STEP_ONLY = `
const linear = require('./linear.js');
module.exports = {
  ...linear,
  name: 'linear-step',
  optimizer: 'program',
  defaultTag: undefined,
  async start(ctx) {
    const inner = await linear.start(ctx);
    const params = inner.parameters();
    return {
      kind: 'step',
      step(batch) {
        const { loss, grads } = inner.lossAndGrads(batch);
        ctx.tf.tidy(() => {
          for (const [name, g] of grads) params.get(name).assign(params.get(name).sub(g.mul(0.05)));
        });
        ctx.tf.dispose([...grads.values()]);
        const value = loss.dataSync()[0];
        loss.dispose();
        return value;
      },
      optimizerTensors: () => ({}),
      modelTensors: () => inner.modelTensors(),
      dispose: () => inner.dispose(),
    };
  },
};
`;

function oneErrorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.startsWith('ckpt: error:'));
  assert.equal(lines.length, 1, stderr);
  return lines[0]!;
}

describe('the example program: a tf.LayersModel trained with tf.train.adam', () => {
  it('trains with no flags, and 0→12 equals 0→6 then --resume to 12, bit for bit', async () => {
    const root = tempDir();
    const base = ['train', '--program', EXAMPLE, '--root', root, '--save-every', '6'];
    const [straight, first] = await Promise.all([
      ckptAsync([...base, '--tag', 'straight', '--steps', '12']),
      ckptAsync([...base, '--tag', 'resumed', '--steps', '6']),
    ]);
    assert.equal(straight.code, 0, straight.stderr);
    assert.equal(first.code, 0, first.stderr);
    const second = ckpt([...base, '--tag', 'resumed', '--steps', '12', '--resume']);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /from step 6 to 12/);
    const dir = (tag: string) => join(root, 'base_checkpoints', tag);
    assertSameFiles(dir('straight'), dir('resumed'), [
      `model_${pad(12)}.safetensors`,
      `optim_${pad(12)}_rank0.safetensors`,
    ]);
    const meta = JSON.parse(readFileSync(join(dir('resumed'), `meta_${pad(12)}.json`), 'utf8'));
    assert.deepEqual(meta.program, { name: 'mlp-classifier', version: 1 });
    assert.equal(meta.loop.batch, 32, "the program's default batch");
    assert.equal(meta.dataloader_state.sample_index, 12 * 32);
  });

  it('trains data-parallel on two ranks with a replicated optimizer, and resumes exactly', async () => {
    const root = tempDir();
    const base = ['train', '--program', EXAMPLE, '--root', root, '--save-every', '4', '--nproc', '2'];
    const [straight, first] = await Promise.all([
      ckptAsync([...base, '--tag', 'straight', '--steps', '8']),
      ckptAsync([...base, '--tag', 'resumed', '--steps', '4']),
    ]);
    assert.equal(straight.code, 0, straight.stderr);
    assert.equal(first.code, 0, first.stderr);
    const second = ckpt([...base, '--tag', 'resumed', '--steps', '8', '--resume']);
    assert.equal(second.code, 0, second.stderr);
    const dir = (tag: string) => join(root, 'base_checkpoints', tag);
    const files = [
      `model_${pad(8)}.safetensors`,
      `optim_${pad(8)}_rank0.safetensors`,
      `optim_${pad(8)}_rank1.safetensors`,
    ];
    assertSameFiles(dir('straight'), dir('resumed'), files);
    // Replicated: both ranks hold the same optimizer state, so one rank resumes it without --reshard.
    assert.equal(sha(join(dir('straight'), files[1]!)), sha(join(dir('straight'), files[2]!)));
    const single = ['train', '--program', EXAMPLE, '--root', root, '--tag', 'straight', '--steps', '10'];
    const one = ckpt([...single, '--save-every', '2', '--resume']);
    assert.equal(one.code, 0, one.stderr);
  });

  it('evaluates by its own primary metric; list and inspect name the program', () => {
    const root = tempDir();
    assert.equal(
      ckpt(['train', '--program', EXAMPLE, '--root', root, '--steps', '20', '--save-every', '10']).code,
      0,
    );
    const dir = join(root, 'base_checkpoints', 'mlp');
    const evaluated = ckpt(['eval', dir, '--program', EXAMPLE, '--json']);
    assert.equal(evaluated.code, 0, evaluated.stderr);
    const result = JSON.parse(evaluated.stdout);
    assert.deepEqual(result.metric, { name: 'val_accuracy', mode: 'max' });
    assert.ok(result.val_accuracy > 0.5 && result.val_accuracy <= 1, `accuracy ${result.val_accuracy}`);
    const onDisk = JSON.parse(readFileSync(join(dir, `eval_${pad(20)}.json`), 'utf8'));
    assert.equal(onDisk.val_accuracy, result.val_accuracy);
    assert.equal(Number(ckpt(['eval', dir, '--program', EXAMPLE, '--step', '10']).stdout.trim()) > 0, true);
    assert.match(ckpt(['list', root]).stdout, /^mlp\s+10\s+committed\s.*\bmlp-classifier\b/m);
    assert.deepEqual(JSON.parse(ckpt(['inspect', dir, '--json']).stdout).program, {
      name: 'mlp-classifier',
      version: 1,
    });
  });
});

describe("a user's own program, in a file of its own, loaded by path", () => {
  it('trains, resumes exactly and evaluates with the loop-owned optimizer', () => {
    const work = tempDir();
    const program = join(work, 'linear.js');
    writeFileSync(program, linearProgram(1));
    const base = ['train', '--program', program, '--root', work, '--save-every', '3', '--lr', '0.05'];
    assert.equal(ckpt([...base, '--tag', 'straight', '--steps', '9']).code, 0);
    assert.equal(ckpt([...base, '--tag', 'resumed', '--steps', '6']).code, 0);
    const resumed = ckpt([
      'train',
      '--program',
      program,
      '--root',
      work,
      '--save-every',
      '3',
      '--tag',
      'resumed',
      '--steps',
      '9',
      '--resume',
    ]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const dir = (tag: string) => join(work, 'base_checkpoints', tag);
    assertSameFiles(dir('straight'), dir('resumed'), [
      `model_${pad(9)}.safetensors`,
      `optim_${pad(9)}_rank0.safetensors`,
    ]);
    const evaluated = ckpt(['eval', dir('straight'), '--program', program]);
    assert.equal(evaluated.code, 0, evaluated.stderr);
    assert.ok(Number(evaluated.stdout) >= 0);
    const first = JSON.parse(
      ckpt(['eval', dir('straight'), '--program', program, '--step', '3', '--json']).stdout,
    );
    assert.ok(Number(evaluated.stdout) < first.mse, 'the loss goes down');
  });

  it('loads an ES module (.mjs) whose default export is the program', () => {
    const work = tempDir();
    const program = join(work, 'linear.mjs');
    writeFileSync(program, linearProgram(1).replace('module.exports =', 'export default'));
    const run = ckpt(['train', '--program', program, '--root', work, '--steps', '3', '--lr', '0.05']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /trained linear from step 0 to 3 .* with program linear/);
  });

  it('refuses a checkpoint written by a newer version of the program', () => {
    const work = tempDir();
    const v1 = join(work, 'v1.js');
    const v2 = join(work, 'v2.js');
    writeFileSync(v1, linearProgram(1));
    writeFileSync(v2, linearProgram(2));
    assert.equal(ckpt(['train', '--program', v2, '--root', work, '--steps', '3']).code, 0);
    const older = ckpt(['train', '--program', v1, '--root', work, '--steps', '6', '--resume']);
    assert.equal(older.code, 2);
    assert.match(
      oneErrorLine(older.stderr),
      /version 2 of program "linear", newer than the version loaded here \(1\)/,
    );
  });
});

describe('refusals', () => {
  it("a GPT checkpoint is not resumed or evaluated by another program, nor another program's by the GPT", () => {
    const root = tempDir();
    const gpt = ['train', '--root', root, '--tag', 'g', '--depth', '1', '--n-embd', '16', '--seq-len', '16'];
    assert.equal(ckpt([...gpt, '--batch', '2', '--steps', '2']).code, 0);
    const mixed = ckpt([
      'train',
      '--program',
      EXAMPLE,
      '--root',
      root,
      '--tag',
      'g',
      '--steps',
      '4',
      '--resume',
    ]);
    assert.equal(mixed.code, 2);
    assert.match(
      oneErrorLine(mixed.stderr),
      /written by program "gpt"; program "mlp-classifier" cannot resume/,
    );
    assert.equal(ckpt(['train', '--program', EXAMPLE, '--root', root, '--steps', '2']).code, 0);
    const mlpDir = join(root, 'base_checkpoints', 'mlp');
    const byGpt = ckpt(['train', '--root', root, '--tag', 'mlp', '--steps', '4', '--resume']);
    assert.equal(byGpt.code, 2);
    assert.match(oneErrorLine(byGpt.stderr), /written by program "mlp-classifier"; program "gpt"/);
    const evalNoProgram = ckpt(['eval', mlpDir]);
    assert.equal(evalNoProgram.code, 2);
    assert.match(
      oneErrorLine(evalNoProgram.stderr),
      /program "mlp-classifier", which is not built in: pass --program PATH/,
    );
  });

  it('a program path that does not exist, or a module that exports no program, exits 2 in one line', () => {
    const work = tempDir();
    const missing = ckpt(['train', '--program', join(work, 'nope.js'), '--root', work, '--steps', '1']);
    assert.equal(missing.code, 2);
    assert.match(oneErrorLine(missing.stderr), /nope\.js: no such file/);
    const notProgram = join(work, 'not-a-program.js');
    writeFileSync(notProgram, 'module.exports = { name: "x", answer: 42 };\n');
    const wrong = ckpt(['train', '--program', notProgram, '--root', work, '--steps', '1']);
    assert.equal(wrong.code, 2);
    assert.match(
      oneErrorLine(wrong.stderr),
      /default export is not a training program \(.*configure must be a function/,
    );
    const unknown = ckpt(['train', '--program', 'no-such-program', '--root', work, '--steps', '1']);
    assert.equal(unknown.code, 2);
    assert.match(oneErrorLine(unknown.stderr), /program "no-such-program" is not known here \(known: gpt\)/);
  });

  it('a program that breaks its own declaration (session kind, flags the command has) exits 2 naming it', () => {
    const work = tempDir();
    const wrongKind = join(work, 'wrong-kind.js');
    writeFileSync(wrongKind, linearProgram(1).replace("optimizer: 'loop'", "optimizer: 'program'"));
    const kind = ckpt(['train', '--program', wrongKind, '--root', work, '--steps', '1']);
    assert.equal(kind.code, 2);
    assert.match(
      oneErrorLine(kind.stderr),
      /declares optimizer 'program' but its start\(\) returned a 'gradients' session/,
    );
    const taken = join(work, 'taken.js');
    writeFileSync(
      taken,
      linearProgram(1).replace(
        'defaultBatch: 4,',
        "defaultBatch: 4, flags: { steps: { key: 'n', type: 'int', help: 'x' } },",
      ),
    );
    const flags = ckpt(['train', '--program', taken, '--root', work, '--steps', '1']);
    assert.equal(flags.code, 2);
    assert.match(
      oneErrorLine(flags.stderr),
      /program "linear" declares flags that ckpt train has already: --steps/,
    );
  });

  it('a program-owned optimizer without gradients()/applyGradients() trains on one rank; --nproc 2 exits 2', () => {
    const work = tempDir();
    writeFileSync(join(work, 'linear.js'), linearProgram(1));
    const program = join(work, 'step-only.js');
    writeFileSync(program, STEP_ONLY);
    const base = ['train', '--program', program, '--root', work, '--steps', '2'];
    const one = ckpt([...base, '--tag', 'one']);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stderr, /with program linear-step/);
    const two = ckpt([...base, '--tag', 'two', '--nproc', '2']);
    assert.equal(two.code, 2, two.stderr);
    assert.match(
      oneErrorLine(two.stderr),
      /the program owns its optimizer and its session has no gradients\(\)\/applyGradients\(\): it cannot train on several ranks; drop --nproc/,
    );
    const twoDir = join(work, 'base_checkpoints', 'two');
    const written = existsSync(twoDir) ? readdirSync(twoDir) : [];
    assert.deepEqual(
      written.filter((f) => /^(model|optim|meta|manifest)_/.test(f)),
      [],
      `nothing saved: ${written.join(', ')}`,
    );
  });

  it('a program without defaultTag needs --tag (exit 2 naming it)', () => {
    const work = tempDir();
    writeFileSync(join(work, 'linear.js'), linearProgram(1));
    const program = join(work, 'step-only.js');
    writeFileSync(program, STEP_ONLY);
    const untagged = ckpt(['train', '--program', program, '--root', work, '--steps', '1']);
    assert.equal(untagged.code, 2, untagged.stderr);
    assert.match(oneErrorLine(untagged.stderr), /^ckpt: error: train: give --tag T$/);
  });

  it("buildModel refuses another program's checkpoint with a ProgramMismatchError naming it", async () => {
    const work = tempDir();
    const program = join(work, 'linear.js');
    writeFileSync(program, linearProgram(1));
    const trained = ckpt(['train', '--program', program, '--root', work, '--steps', '1', '--lr', '0.05']);
    assert.equal(trained.code, 0, trained.stderr);
    await assert.rejects(buildModel(join(work, 'base_checkpoints', 'linear'), 1), (err: unknown) => {
      assert.ok(err instanceof ProgramMismatchError, String(err));
      assert.match(
        err.message,
        /meta_000001\.json was written by program "linear"; buildModel builds the built-in GPT only/,
      );
      return true;
    });
  });

  it("a flag the program does not declare, and the loop's schedule for a program-owned optimizer, exit 2", () => {
    const work = tempDir();
    const depth = ckpt(['train', '--program', EXAMPLE, '--root', work, '--steps', '1', '--depth', '3']);
    assert.equal(depth.code, 2);
    assert.match(oneErrorLine(depth.stderr), /unknown flag --depth/);
    const lr = ckpt(['train', '--program', EXAMPLE, '--root', work, '--steps', '1', '--lr', '0.1']);
    assert.equal(lr.code, 2);
    assert.match(
      oneErrorLine(lr.stderr),
      /--lr sets the loop's optimizer, but program "mlp-classifier" owns its optimizer/,
    );
    const config = ckpt([
      'train',
      '--program',
      EXAMPLE,
      '--root',
      work,
      '--steps',
      '1',
      '--config',
      '{"hidden": 0}',
    ]);
    assert.equal(config.code, 2, config.stderr);
  });
});

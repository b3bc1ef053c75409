/**
 * `ckpt import`, run as a real process (`node bin/ckpt.js import …`): a state_dict written by Python's
 * safetensors, with the prefixes torch.compile adds and without the per-layer scalars (an older nanochat),
 * imports and builds with buildModel to the same weights; a shape that does not fit the config is refused
 * before anything is written; errors are one line with exit code 2. Needs python3 with safetensors and
 * numpy (as the other interoperability tests): it fails without them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { metaFile } from '../../checkpoint';
import { buildModel } from '../../model/build';
import { ARCHITECTURES, normalizeConfig, parameterShapes } from '../../model/config';
import { tempDir } from '../helpers/tmp';

const PYTHON = process.env.PYTHON ?? 'python3';
const CONFIG = { sequence_len: 16, vocab_size: 260, n_layer: 1, n_head: 2, n_kv_head: 2, n_embd: 16 };

/** Deterministic values for a parameter, so the test can compare what the model holds. */
function values(name: string, count: number): number[] {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 1000;
  return Array.from({ length: count }, (_, i) => ((h + i * 7) % 97) / 97 - 0.5);
}

/** Write a state_dict with Python's safetensors.numpy.save_file, as a converted PyTorch checkpoint would be. */
function pythonStateDict(file: string, shapes: Record<string, number[]>, prefix: string): void {
  const spec = Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => [
      prefix + name,
      {
        shape,
        values: values(
          name,
          shape.reduce((a, b) => a * b, 1),
        ),
      },
    ]),
  );
  const script = [
    'import json, sys, numpy as np',
    'from safetensors.numpy import save_file',
    'spec = json.load(sys.stdin)',
    'save_file({k: np.array(v["values"], dtype=np.float32).reshape(v["shape"]) for k, v in spec.items()}, sys.argv[1], metadata={"format": "pt"})',
  ].join('\n');
  const res = spawnSync(PYTHON, ['-c', script, file], { input: JSON.stringify(spec), encoding: 'utf8' });
  assert.equal(
    res.status,
    0,
    `python3 with safetensors and numpy is required: ${res.error?.message ?? res.stderr}`,
  );
}

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'bin', 'ckpt.js');
const ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith('CKPT_') && !k.startsWith('NODE_TEST')),
);

interface Run {
  code: number | null;
  stdout: string;
  /** "EXIT: message" of the one-line `ckpt: error:` (EXIT is the exit code), else ''. */
  error: string;
}

function runImport(argv: string[]): Run {
  const res = spawnSync(process.execPath, [CLI, 'import', ...argv], {
    cwd: ROOT,
    env: ENV,
    encoding: 'utf8',
    timeout: 120_000,
  });
  const message = /^ckpt: error: (.*)$/m.exec(res.stderr)?.[1];
  return {
    code: res.status,
    stdout: res.stdout,
    error: message === undefined ? '' : `${res.status}: ${message}`,
  };
}

describe('ckpt import', () => {
  const shapes = parameterShapes(normalizeConfig(CONFIG));
  const { resid_lambdas: _r, x0_lambdas: _x, ...olderShapes } = shapes;

  it('imports a Python-written state_dict (torch.compile prefixes, no per-layer scalars) that builds to the same weights', async () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    pythonStateDict(file, olderShapes, '_orig_mod.');
    const dir = join(work, 'base_checkpoints', 'd1');
    const { code, stdout, error } = runImport([
      file,
      dir,
      '--step',
      '1200',
      '--config',
      JSON.stringify(CONFIG),
      '--json',
    ]);
    assert.equal(code, 0, error);
    const result = JSON.parse(stdout) as { step: number; tensors: number };
    assert.equal(result.step, 1200);
    assert.equal(result.tensors, Object.keys(olderShapes).length);

    const built = await buildModel(dir, 1200, { phase: 'eval' });
    try {
      assert.deepEqual(built.migrations.sort(), [
        'per-layer-scalars',
        'strip-wrapper-prefixes',
        'window-pattern-default',
      ]);
      const params = built.model.parameters();
      for (const [name, shape] of Object.entries(olderShapes)) {
        const got = Array.from(params.get(name)!.dataSync());
        const want = Array.from(
          new Float32Array(
            values(
              name,
              shape.reduce((a, b) => a * b, 1),
            ),
          ),
        );
        assert.deepEqual(got, want, name);
      }
      assert.deepEqual(Array.from(params.get('resid_lambdas')!.dataSync()), [1]);
      assert.deepEqual(Array.from(params.get('x0_lambdas')!.dataSync()), [0]);
    } finally {
      built.model.dispose();
    }
    assert.match(
      runImport([file, dir, '--step', '1200', '--config', JSON.stringify(CONFIG)]).error,
      /^2: step 1200 is already committed/,
    );
  });

  it('takes the config from a meta file (nanochat meta_<step>.json) and converts with --save-dtype', async () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    pythonStateDict(file, shapes, '');
    const metaPath = join(work, 'meta_000700.json');
    writeFileSync(metaPath, JSON.stringify({ step: 700, model_config: CONFIG, user_config: { run: 'x' } }));
    const dir = join(work, 'ckpt');
    const { code, stdout, error } = runImport([
      file,
      dir,
      '--step',
      '700',
      '--config',
      metaPath,
      '--save-dtype',
      'bf16',
    ]);
    assert.equal(code, 0, error);
    assert.match(stdout, /^imported \d+ tensors from model\.safetensors as step 700/);
    const built = await buildModel(dir, 700);
    try {
      assert.equal(built.model.config.n_embd, 16);
    } finally {
      built.model.dispose();
    }
  });

  it('refuses tensors that do not fit the config, naming them, and writes nothing', async () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    pythonStateDict(file, { ...shapes, 'lm_head.weight': [260, 8] }, '');
    const dir = join(work, 'ckpt');
    const { error } = runImport([file, dir, '--step', '5', '--config', JSON.stringify(CONFIG)]);
    assert.match(error, /^2: .*lm_head\.weight/);
    assert.ok(!existsSync(dir) || readdirSync(dir).length === 0);
  });

  it('without --config commits plain tensors; bad flags are usage errors', async () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    pythonStateDict(file, { 'encoder.weight': [2, 2] }, '');
    const dir = join(work, 'ckpt');
    const plain = runImport([file, dir, '--step', '1']);
    assert.equal(plain.code, 0, plain.error);
    assert.ok(existsSync(join(dir, metaFile(1))));
    assert.match(runImport([file, dir]).error, /^2: .*--step N is required/);
    assert.match(runImport([file, dir, '--step', '2', '--save-dtype', 'f64']).error, /^2: --save-dtype/);
    assert.match(
      runImport([file, dir, '--step', '2', '--config', '{not json']).error,
      /^2: .*not valid JSON/,
    );
    assert.match(
      runImport([file, dir, '--step', '2', '--config', join(work, 'missing.json')]).error,
      /^2: .*neither inline JSON nor a readable file/,
    );
    assert.ok(!existsSync(join(dir, metaFile(2))));
  });

  it('--architecture names the nanochat version; an unknown one or a contradicting constant is refused', () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    const config = JSON.stringify({ ...CONFIG, qk_scale: 1.2 });
    assert.match(
      runImport([file, work, '--step', '1', '--config', config, '--architecture', 'nanochat-2026-03-09'])
        .error,
      /^2: --config sets qk_scale = 1\.2, but --architecture nanochat-2026-03-09 has 1\.15/,
    );
    assert.match(
      runImport([file, work, '--step', '1', '--config', config, '--architecture', 'gpt2']).error,
      /^2: --architecture must be one of nanochat-2026-03-14, nanochat-2026-03-09, .*, got "gpt2"/,
    );
    assert.match(
      runImport([file, work, '--step', '1', '--architecture', 'legacy']).error,
      /^2: --architecture describes the model of --config/,
    );
  });

  it('records the architecture it was given, which the built model then has', async () => {
    const work = tempDir();
    const file = join(work, 'model.safetensors');
    const legacy = normalizeConfig({ ...CONFIG, ...ARCHITECTURES['nanochat-2026-01-16']! });
    pythonStateDict(file, parameterShapes(legacy), '');
    const dir = join(work, 'ckpt');
    const run = runImport([
      file,
      dir,
      '--step',
      '3',
      '--config',
      JSON.stringify(CONFIG),
      '--architecture',
      'nanochat-2026-01-16',
    ]);
    assert.equal(run.code, 0, run.error);
    const built = await buildModel(dir, 3);
    try {
      assert.deepEqual(built.model.config, { ...legacy, window_pattern: 'L' });
      assert.ok(!built.migrations.includes('architecture-constants'));
    } finally {
      built.model.dispose();
    }
  });
});

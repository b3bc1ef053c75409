import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  findLargestModel,
  findLastStep,
  InvalidArgumentError,
  listCheckpoints,
  LocalStore,
  modelFile,
  NoCheckpointError,
  openStore,
  saveCheckpoint,
  validateName,
  validateStep,
  parseFileName,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

async function saveSteps(dir: string, steps: number[]): Promise<void> {
  for (const step of steps)
    await saveCheckpoint(dir, step, { model: tinyModel(step), optimizer: tinyOptimizer(), meta: tinyMeta() });
}

function flipByte(file: string): void {
  const bytes = readFileSync(file);
  bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
  writeFileSync(file, bytes);
}

describe('findLastStep', () => {
  it('returns the highest committed step', async () => {
    const dir = tempDir();
    await saveSteps(dir, [5, 30, 1000000, 20]);
    assert.equal(await findLastStep(dir), 1000000);
  });

  it('skips a corrupt newest checkpoint and falls back to the previous one', async () => {
    const dir = tempDir();
    await saveSteps(dir, [10, 20, 30]);
    flipByte(join(dir, modelFile(30)));
    assert.equal(await findLastStep(dir), 20);
    assert.equal(await findLastStep(dir, { verify: false }), 30);
  });

  it('ignores steps without a manifest', async () => {
    const dir = tempDir();
    await saveSteps(dir, [10]);
    writeFileSync(join(dir, modelFile(40)), 'half written');
    assert.equal(await findLastStep(dir), 10);
  });

  it('is a clear NoCheckpointError on an empty, missing or all-corrupt directory', async () => {
    const dir = tempDir();
    await assert.rejects(findLastStep(dir), NoCheckpointError);
    await assert.rejects(findLastStep(join(dir, 'nope')), NoCheckpointError);
    await saveSteps(dir, [1]);
    flipByte(join(dir, modelFile(1)));
    await assert.rejects(findLastStep(dir), /all corrupt/);
  });
});

describe('findLargestModel', () => {
  it('picks the largest d<N> tag, numerically (d12 > d3)', async () => {
    const root = tempDir();
    for (const tag of ['d2', 'd12', 'd3']) await saveSteps(join(root, tag), [1]);
    assert.equal(await findLargestModel(root), 'd12');
  });

  it('without d<N> tags, picks the most recently modified tag', async () => {
    const root = tempDir();
    await saveSteps(join(root, 'alpha'), [1]);
    await saveSteps(join(root, 'beta'), [1]);
    const old = new Date(Date.now() - 3_600_000);
    for (const f of [
      'manifest_000001.json',
      'meta_000001.json',
      modelFile(1),
      'optim_000001_rank0.safetensors',
    ]) {
      utimesSync(join(root, 'beta', f), old, old);
    }
    assert.equal(await findLargestModel(root), 'alpha');
  });

  it('ignores tags with no committed checkpoint and unsafe directory names', async () => {
    const root = tempDir();
    await saveSteps(join(root, 'd2'), [1]);
    mkdirSync(join(root, 'd99'));
    writeFileSync(join(root, 'd99', modelFile(1)), 'no manifest');
    mkdirSync(join(root, '.hidden'));
    assert.equal(await findLargestModel(root), 'd2');
  });

  it('is a clear error when there is nothing', async () => {
    await assert.rejects(findLargestModel(tempDir()), NoCheckpointError);
  });
});

describe('listCheckpoints', () => {
  it('reports committed and uncommitted steps, sizes, verification and eval metrics', async () => {
    const dir = tempDir();
    await saveSteps(dir, [10, 20]);
    writeFileSync(join(dir, 'eval_000010.json'), JSON.stringify({ step: 10, val_bpb: 1.25, when: 'x' }));
    writeFileSync(join(dir, modelFile(30)), 'orphan');
    flipByte(join(dir, modelFile(20)));
    const infos = await listCheckpoints(dir, { verify: true });
    assert.deepEqual(
      infos.map((i) => [i.step, i.committed, i.verified]),
      [
        [10, true, true],
        [20, true, false],
        [30, false, undefined],
      ],
    );
    assert.deepEqual(infos[0]!.metrics, { step: 10, val_bpb: 1.25 });
    assert.ok(infos[0]!.bytes > 0);
    assert.equal(infos[1]!.problems![0]!.file, modelFile(20));
  });
});

describe('input safety', () => {
  it('rejects traversal, absolute paths, separators and odd names', () => {
    for (const bad of ['..', '../x', 'a/b', 'a\\b', '/etc', '', '.', '.hidden', 'a\0b', 'x..y']) {
      assert.throws(() => validateName(bad, 'tag'), InvalidArgumentError, JSON.stringify(bad));
    }
    for (const good of ['d12', 'base', 'my-run_1.2']) assert.equal(validateName(good, 'tag'), good);
  });

  it('rejects negative, fractional and non-numeric steps', () => {
    for (const bad of [-1, 1.5, '1.5', '-3', 'abc', '', NaN, Infinity, '1e3']) {
      assert.throws(() => validateStep(bad), InvalidArgumentError, String(bad));
    }
    assert.equal(validateStep('000030'), 30);
    assert.equal(validateStep(1234567), 1234567);
  });

  it('store keys cannot leave the store root', async () => {
    const store = new LocalStore(tempDir());
    for (const key of ['../x', '/etc/passwd', 'a/../../b', './a']) {
      await assert.rejects(store.read(key), InvalidArgumentError, key);
    }
  });

  it('unknown URL schemes are a clear error', () => {
    assert.throws(() => openStore('gs://bucket/x'), /no store is registered for gs:\/\//);
  });

  it('file names parse past 999999 and reject look-alikes', () => {
    assert.deepEqual(parseFileName('model_1234567.safetensors'), { kind: 'model', step: 1234567 });
    assert.deepEqual(parseFileName('optim_000010_rank12.safetensors'), { kind: 'optim', step: 10, rank: 12 });
    assert.equal(parseFileName('model_10.safetensors'), null);
    assert.equal(parseFileName('model_000010.safetensors.bak'), null);
  });
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Writable } from 'node:stream';
import {
  configureLogging,
  f32Tensor,
  loadCheckpoint,
  saveCheckpoint,
  SchemaError,
  type NamedTensors,
} from '../../checkpoint';
import { initBackend } from '../../model/backend';
import { buildModel, loadModel, loadOptimizerState } from '../../model/build';
import { TensorSetMismatchError, TokenizerMismatchError } from '../../model/errors';
import { GPT, initializerCalls, normalizeConfig } from '../../model/gpt';
import { ByteTokenizer } from '../../model/tokenizer';
import { tempDir } from '../helpers/tmp';

const CONFIG = normalizeConfig({ n_layer: 2, n_embd: 32, sequence_len: 16 });
const SOURCES = { base: 'base_checkpoints', sft: 'chatsft_checkpoints' };

async function trainedTensors(seed = 1): Promise<NamedTensors> {
  const { tf } = await initBackend();
  const model = GPT.initialize(tf, CONFIG, seed);
  try {
    return model.namedTensors();
  } finally {
    model.dispose();
  }
}

async function save(dir: string, step: number, model: NamedTensors, meta: Record<string, unknown> = {}) {
  await saveCheckpoint(dir, step, {
    model,
    meta: { model_config: { ...CONFIG }, tokenizer: new ByteTokenizer().identity(), ...meta },
  });
}

function captureLogs(): string[] {
  const lines: string[] = [];
  configureLogging({
    destination: new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    }),
  });
  return lines;
}

describe('buildModel', () => {
  it('builds the saved weights bit for bit and runs no weight initializer', async () => {
    const dir = tempDir();
    const tensors = await trainedTensors(3);
    await save(dir, 10, tensors);
    const before = initializerCalls();
    const { model, meta, step } = await buildModel(dir, 10, { phase: 'eval' });
    assert.equal(initializerCalls(), before, 'no initializer call');
    assert.equal(step, 10);
    assert.equal(meta.step, 10);
    const rebuilt = model.namedTensors();
    for (const [name, t] of Object.entries(tensors)) {
      assert.deepEqual(
        Buffer.from(rebuilt[name]!.data.buffer as ArrayBuffer),
        Buffer.from(t.data.buffer as ArrayBuffer),
        name,
      );
    }
    assert.ok(
      ![...model.parameters().keys()].some((k) => k.includes('rotary') || k.includes('cos')),
      'rotary is not a parameter',
    );
    model.dispose();
  });

  it('builds a checkpoint written without window_pattern, logging the patch once', async () => {
    const dir = tempDir();
    const tensors = await trainedTensors();
    const config: Record<string, unknown> = { ...CONFIG };
    delete config.window_pattern;
    const lines = captureLogs();
    for (const step of [1, 2]) {
      await saveCheckpoint(dir, step, { model: tensors, meta: { model_config: config } });
      const { model, migrations } = await buildModel(dir, step);
      assert.ok(migrations.includes('window-pattern-default'));
      assert.equal(model.config.window_pattern, 'L');
      model.dispose();
    }
    assert.equal(lines.filter((l) => l.includes('window-pattern-default')).length, 1);
    configureLogging({});
  });

  it('loads keys carrying _orig_mod. or module. prefixes, and bf16 weights', async () => {
    const dir = tempDir();
    const tensors = await trainedTensors();
    const prefixed: NamedTensors = {};
    for (const [name, t] of Object.entries(tensors))
      prefixed[(name.length % 2 ? '_orig_mod.' : 'module.') + name] = t;
    await saveCheckpoint(
      dir,
      1,
      { model: prefixed, meta: { model_config: { ...CONFIG } } },
      { saveDtype: 'BF16' },
    );
    const { model, migrations } = await buildModel(dir, 1);
    assert.ok(migrations.includes('strip-wrapper-prefixes'));
    assert.equal(model.parameters().size, Object.keys(tensors).length);
    model.dispose();
  });

  it('lists every missing, unexpected and mis-shaped key in one error', async () => {
    const dir = tempDir();
    const tensors = { ...(await trainedTensors()) };
    delete tensors['lm_head.weight'];
    tensors['transformer.h.0.mlp.c_fc.weight'] = f32Tensor([2, 2], [1, 2, 3, 4]);
    tensors['extra.weight'] = f32Tensor([1], [1]);
    await save(dir, 1, tensors);
    await assert.rejects(buildModel(dir, 1), (err: unknown) => {
      assert.ok(err instanceof TensorSetMismatchError, String(err));
      assert.match(err.message, /lm_head\.weight/);
      assert.match(err.message, /extra\.weight/);
      assert.match(err.message, /transformer\.h\.0\.mlp\.c_fc\.weight/);
      return true;
    });
  });

  it('a tokenizer or vocabulary mismatch is a typed error', async () => {
    const dir = tempDir();
    const tensors = await trainedTensors();
    await save(dir, 1, tensors, { tokenizer: { kind: 'byte', vocab_size: 300, hash: 'x' } });
    await assert.rejects(buildModel(dir, 1), TokenizerMismatchError);
    const small = normalizeConfig({ ...CONFIG, vocab_size: 100 });
    const { tf } = await initBackend();
    const m = GPT.initialize(tf, small, 1);
    await saveCheckpoint(dir, 2, { model: m.namedTensors(), meta: { model_config: { ...small } } });
    m.dispose();
    await assert.rejects(buildModel(dir, 2), /vocab_size 100 is smaller than the tokenizer's 257/);
  });

  it('a checkpoint without model_config is a clear error', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 1, { model: await trainedTensors(), meta: {} });
    await assert.rejects(buildModel(dir, 1), /no model_config/);
    await assert.doesNotReject(loadCheckpoint(dir, 1));
    assert.ok(SchemaError);
  });
});

describe('loadModel and loadOptimizerState', () => {
  it('with no tag or step, picks the largest tag and its last committed step', async () => {
    const root = tempDir();
    const tensors = await trainedTensors();
    for (const tag of ['d2', 'd10', 'd3']) {
      await save(join(root, 'base_checkpoints', tag), 5, tensors);
      await save(join(root, 'base_checkpoints', tag), 7, tensors);
    }
    const loaded = await loadModel('base', { root, sources: SOURCES });
    assert.equal(loaded.tag, 'd10');
    assert.equal(loaded.step, 7);
    loaded.model.dispose();
    await assert.rejects(loadModel('nope', { root, sources: SOURCES }), /unknown source "nope"/);
    await assert.rejects(
      loadModel('base', { root, sources: SOURCES, tag: '../d2' }),
      /must not be "." or contain ".."/,
    );
    assert.equal(await loadOptimizerState('base', { root, sources: SOURCES, tag: 'd2' }), null);
  });
});

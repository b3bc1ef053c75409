import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../model/errors';
import {
  DEFAULT_CONFIG,
  defaultHeads,
  layerWindows,
  modelTag,
  normalizeConfig,
  parameterShapes,
  type GPTConfig,
} from '../../model/gpt';

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.field;
  }
  assert.fail('expected a ConfigError');
}

test('defaults: the d2 demo model', () => {
  const c = normalizeConfig();
  assert.deepEqual(c, { ...DEFAULT_CONFIG });
  assert.deepEqual(c, {
    sequence_len: 64,
    vocab_size: 257,
    n_layer: 2,
    n_head: 4,
    n_kv_head: 4,
    n_embd: 64,
    window_pattern: 'L',
  });
  assert.equal(modelTag(c), 'd2');
  assert.equal(modelTag(normalizeConfig({ n_layer: 12 })), 'd12');
});

test('n_head defaults to n_embd/16 (even head_dim), n_kv_head to n_head', () => {
  assert.equal(normalizeConfig({ n_embd: 128 }).n_head, 8);
  assert.equal(normalizeConfig({ n_embd: 128 }).n_kv_head, 8);
  assert.equal(normalizeConfig({ n_embd: 32, n_head: 2 }).n_kv_head, 2);
  assert.equal(normalizeConfig({ n_embd: 8 }).n_head, 1); // head_dim 8 < 16: one head
  assert.equal(defaultHeads(48), 3); // 48/16
  assert.equal(defaultHeads(40), 2); // 40/2 = 20: the most heads with head_dim >= 16 and even
  assert.equal(defaultHeads(30), 1);
  assert.equal(normalizeConfig({ n_embd: 64, n_head: 4, n_kv_head: 1 }).n_kv_head, 1); // MQA
});

test('validation errors name the field', () => {
  assert.equal(
    fieldOf(() => normalizeConfig({ n_embd: 0 })),
    'n_embd',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ n_layer: 1.5 })),
    'n_layer',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ sequence_len: -4 })),
    'sequence_len',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ vocab_size: '257' as unknown as number })),
    'vocab_size',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ n_embd: 64, n_head: 3 })),
    'n_head',
  ); // not divisible
  assert.equal(
    fieldOf(() => normalizeConfig({ n_embd: 64, n_head: 4, n_kv_head: 3 })),
    'n_kv_head',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ n_embd: 12, n_head: 4 })),
    'n_head',
  ); // head_dim 3 is odd
  assert.equal(
    fieldOf(() => normalizeConfig({ window_pattern: 'SXL' })),
    'window_pattern',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ window_pattern: '' })),
    'window_pattern',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ n_embed: 64 } as unknown as Partial<GPTConfig>)),
    'n_embed',
  );
  assert.throws(
    () => normalizeConfig({ n_embd: 64, n_head: 3 }),
    /n_embd \(64\) must be divisible by n_head \(3\)/,
  );
});

test('window pattern is tiled over layers and the last layer is always full', () => {
  const c = normalizeConfig({ n_layer: 5, sequence_len: 64, window_pattern: 'SSL' });
  assert.deepEqual(layerWindows(c), [32, 32, Infinity, 32, Infinity]);
  assert.deepEqual(layerWindows(normalizeConfig({ n_layer: 3, window_pattern: 'S' })), [32, 32, Infinity]);
});

test('parameterShapes: nanochat names, [out, in] layout, GQA-sized k/v', () => {
  const c = normalizeConfig({ n_layer: 2, n_embd: 64, n_head: 4, n_kv_head: 2, vocab_size: 257 });
  const shapes = parameterShapes(c);
  assert.deepEqual(shapes['transformer.wte.weight'], [257, 64]);
  assert.deepEqual(shapes['transformer.h.1.attn.c_q.weight'], [64, 64]);
  assert.deepEqual(shapes['transformer.h.1.attn.c_k.weight'], [32, 64]);
  assert.deepEqual(shapes['transformer.h.1.attn.c_v.weight'], [32, 64]);
  assert.deepEqual(shapes['transformer.h.0.attn.c_proj.weight'], [64, 64]);
  assert.deepEqual(shapes['transformer.h.0.mlp.c_fc.weight'], [256, 64]);
  assert.deepEqual(shapes['transformer.h.0.mlp.c_proj.weight'], [64, 256]);
  assert.deepEqual(shapes['lm_head.weight'], [257, 64]);
  assert.deepEqual(shapes['resid_lambdas'], [2]);
  assert.deepEqual(shapes['x0_lambdas'], [2]);
  assert.equal(Object.keys(shapes).length, 1 + 6 * 2 + 3);
  assert.ok(!Object.keys(shapes).some((n) => /rotary|cos|sin|mask/.test(n)));
});

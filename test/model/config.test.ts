import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../model/errors';
import {
  DEFAULT_CONFIG,
  defaultHeads,
  layerWindows,
  LEGACY_ARCHITECTURE,
  NANOCHAT_ARCHITECTURE,
  paddedVocab,
  modelTag,
  normalizeConfig,
  parameterShapes,
  type GPTConfig,
} from '../../model/gpt';
import type { ShortWindowRule } from '../../model/config';

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
    ...NANOCHAT_ARCHITECTURE,
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
  const c = normalizeConfig({ n_layer: 5, sequence_len: 64, window_pattern: 'SSL', short_window: 'half' });
  assert.deepEqual(layerWindows(c), [32, 32, Infinity, 32, Infinity]);
  assert.deepEqual(layerWindows(normalizeConfig({ n_layer: 3, window_pattern: 'S', short_window: 'half' })), [
    32,
    32,
    Infinity,
  ]);
});

test("short windows follow the recorded rule: nanochat's quarter (ceil to 128) or the legacy half", () => {
  const windows = (sequence_len: number, short_window: ShortWindowRule) =>
    layerWindows(normalizeConfig({ n_layer: 2, sequence_len, window_pattern: 'S', short_window }))[0];
  assert.equal(windows(2048, 'quarter-ceil128'), 512);
  assert.equal(windows(2000, 'quarter-ceil128'), 512);
  assert.equal(windows(512, 'quarter-ceil128'), 128);
  assert.equal(windows(64, 'quarter-ceil128'), 128); // longer than the sequence: full attention in effect
  assert.equal(windows(2048, 'third-ceil128'), 768);
  assert.equal(windows(2048, 'half'), 1024);
  assert.equal(windows(33, 'half'), 16);
});

test('architecture constants are validated and named', () => {
  assert.equal(
    fieldOf(() => normalizeConfig({ rotary_base: 0 })),
    'rotary_base',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ qk_scale: Number.NaN })),
    'qk_scale',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ vocab_multiple: 0 })),
    'vocab_multiple',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ smear: 1 as unknown as boolean })),
    'smear',
  );
  assert.equal(
    fieldOf(() => normalizeConfig({ short_window: 'tenth' as ShortWindowRule })),
    'short_window',
  );
});

test('the vocabulary is padded to vocab_multiple rows', () => {
  assert.equal(paddedVocab(normalizeConfig({ vocab_size: 257 })), 320);
  assert.equal(paddedVocab(normalizeConfig({ vocab_size: 320 })), 320);
  assert.equal(paddedVocab(normalizeConfig({ vocab_size: 257, vocab_multiple: 1 })), 257);
});

test('parameterShapes: nanochat names, [out, in] layout, GQA-sized k/v', () => {
  const c = normalizeConfig({
    n_layer: 2,
    n_embd: 64,
    n_head: 4,
    n_kv_head: 2,
    vocab_size: 257,
    ...LEGACY_ARCHITECTURE,
  });
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

test("parameterShapes of nanochat's architecture: padded vocabulary, value embeddings, smear, backout", () => {
  const c = normalizeConfig({ n_layer: 4, n_embd: 64, n_head: 4, n_kv_head: 2, vocab_size: 257 });
  const shapes = parameterShapes(c);
  assert.deepEqual(shapes['transformer.wte.weight'], [320, 64]);
  assert.deepEqual(shapes['lm_head.weight'], [320, 64]);
  // has_ve: alternating layers, the last one included
  assert.deepEqual(
    Object.keys(shapes).filter((n) => n.startsWith('value_embeds.')),
    ['value_embeds.1.weight', 'value_embeds.3.weight'],
  );
  assert.deepEqual(shapes['value_embeds.3.weight'], [320, 32]);
  assert.deepEqual(shapes['transformer.h.1.attn.ve_gate.weight'], [2, 12]);
  assert.equal(shapes['transformer.h.0.attn.ve_gate.weight'], undefined);
  assert.deepEqual(shapes['smear_gate.weight'], [1, 24]);
  assert.deepEqual(shapes['smear_lambda'], [1]);
  assert.deepEqual(shapes['backout_lambda'], [1]);
  assert.equal(Object.keys(shapes).length, 1 + 6 * 4 + 3 + 2 + 2 + 3);
});

test('a model narrower than a gate lets the gate read all of its channels', () => {
  const shapes = parameterShapes(normalizeConfig({ n_layer: 1, n_embd: 8, n_head: 1 }));
  assert.deepEqual(shapes['smear_gate.weight'], [1, 8]);
  assert.deepEqual(shapes['transformer.h.0.attn.ve_gate.weight'], [1, 8]);
});

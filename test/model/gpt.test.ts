import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { TEST_BACKEND } from '../helpers/backend';
import { initBackend, type TF } from '../../model/backend';
import { TensorSetMismatchError } from '../../model/errors';
import { GPT, initializerCalls, normalizeConfig, parameterShapes, type GPTConfig } from '../../model/gpt';
import { attentionMask } from '../../model/ops';
import type { NamedTensors } from '../../checkpoint/tensors';

let tf: TF;
before(async () => {
  tf = (await initBackend({ force: TEST_BACKEND, log: () => undefined })).tf;
});

const tiny: GPTConfig = normalizeConfig({
  n_layer: 2,
  n_embd: 32,
  n_head: 2,
  sequence_len: 16,
  vocab_size: 257,
});

function tokens(B: number, T: number, offset = 0): ReturnType<TF['tensor2d']> {
  const ids = Array.from({ length: B * T }, (_, i) => (i * 37 + offset) % 256);
  return tf.tensor2d(ids, [B, T], 'int32');
}

function bits(named: NamedTensors): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [k, t] of Object.entries(named))
    out.set(k, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return out;
}

test('parameters() has exactly parameterShapes() names and shapes, float32, no rotary', () => {
  for (const config of [
    tiny,
    normalizeConfig({ n_embd: 64, n_head: 4, n_kv_head: 2, window_pattern: 'SL' }),
  ]) {
    const model = GPT.initialize(tf, config, 1);
    const params = model.parameters();
    const expected = parameterShapes(config);
    assert.deepEqual([...params.keys()], Object.keys(expected));
    for (const [name, v] of params) {
      assert.deepEqual(v.shape, expected[name], name);
      assert.equal(v.dtype, 'float32');
      assert.ok(v.trainable);
    }
    // Run a forward pass so lazily-built rotary tables and masks exist: still not parameters.
    const x = tokens(2, 8);
    model.logits(x).dispose();
    assert.equal(model.parameters().size, Object.keys(expected).length);
    assert.ok(![...model.parameters().keys()].some((n) => /rotary|cos|sin|mask/.test(n)));
    assert.deepEqual(Object.keys(model.namedTensors()), Object.keys(expected));
    x.dispose();
    model.dispose();
  }
});

test('init is deterministic from the seed (bitwise) and differs across seeds', () => {
  const a = GPT.initialize(tf, tiny, 42);
  const b = GPT.initialize(tf, tiny, 42);
  const c = GPT.initialize(tf, tiny, 43);
  const ba = bits(a.namedTensors());
  const bb = bits(b.namedTensors());
  const bc = bits(c.namedTensors());
  for (const [name, buf] of ba) assert.ok(buf.equals(bb.get(name)!), name);
  assert.ok(!ba.get('transformer.wte.weight')!.equals(bc.get('transformer.wte.weight')!));
  // nanochat's init: zero output projections, neutral per-layer scalars.
  const named = a.namedTensors();
  assert.ok((named['transformer.h.0.attn.c_proj.weight']!.data as Float32Array).every((v) => v === 0));
  assert.ok((named['transformer.h.1.mlp.c_proj.weight']!.data as Float32Array).every((v) => v === 0));
  assert.deepEqual([...(named['resid_lambdas']!.data as Float32Array)], [1, 1]);
  assert.deepEqual([...(named['x0_lambdas']!.data as Float32Array)], [0, 0]);
  const q = named['transformer.h.0.attn.c_q.weight']!.data as Float32Array;
  const bound = Math.sqrt(3 / tiny.n_embd);
  assert.ok(q.every((v) => Math.abs(v) <= bound) && q.some((v) => v !== 0));
  [a, b, c].forEach((m) => m.dispose());
});

test('fromTensors adopts the tensors without running the initializer', () => {
  const src = GPT.initialize(tf, tiny, 7);
  const x = tokens(2, 16);
  const expected = src.logits(x);
  const calls = initializerCalls();
  const copy = GPT.fromTensors(tf, tiny, src.parameters());
  const fromNamed = GPT.fromNamedTensors(tf, tiny, src.namedTensors());
  assert.equal(initializerCalls(), calls, 'no initializer call');
  for (const m of [copy, fromNamed]) {
    const got = m.logits(x);
    assert.deepEqual(got.dataSync(), expected.dataSync());
    got.dispose();
  }
  // Variables are independent: disposing the source keeps the copies alive.
  src.dispose();
  copy.logits(x).dispose();
  tf.dispose([x, expected]);
  copy.dispose();
  fromNamed.dispose();
});

test('fromTensors rejects missing, unexpected and mis-shaped names in one error', () => {
  const src = GPT.initialize(tf, tiny, 1);
  const tensors: Record<string, ReturnType<TF['zeros']>> = {};
  for (const [name, v] of src.parameters()) tensors[name] = v;
  delete tensors['lm_head.weight'];
  delete tensors['transformer.h.1.mlp.c_fc.weight'];
  tensors['transformer.h.2.attn.c_q.weight'] = tf.zeros([32, 32]);
  tensors['rotary.cos'] = tf.zeros([16, 8]);
  tensors['transformer.h.0.attn.c_k.weight'] = tf.zeros([32, 16]);
  tensors['x0_lambdas'] = tf.zeros([2], 'int32');
  const calls = initializerCalls();
  assert.throws(
    () => GPT.fromTensors(tf, tiny, tensors),
    (err: unknown) => {
      assert.ok(err instanceof TensorSetMismatchError);
      assert.deepEqual(err.missing.sort(), ['lm_head.weight', 'transformer.h.1.mlp.c_fc.weight']);
      assert.deepEqual(err.unexpected, ['rotary.cos', 'transformer.h.2.attn.c_q.weight']);
      assert.deepEqual(
        err.mismatched.map((m) => m.name),
        ['transformer.h.0.attn.c_k.weight', 'x0_lambdas'],
      );
      assert.match(err.message, /missing: .*lm_head\.weight/);
      assert.match(err.message, /unexpected: .*rotary\.cos/);
      assert.match(err.message, /transformer\.h\.0\.attn\.c_k\.weight \(expected \[32,32\], got \[32,16\]\)/);
      assert.equal(err.exitCode, 2);
      return true;
    },
  );
  assert.equal(initializerCalls(), calls);
  // The same check on checkpoint tensors, before anything is copied to the backend.
  const named = src.namedTensors();
  delete named['resid_lambdas'];
  const wteShape = parameterShapes(tiny)['transformer.wte.weight']!;
  named['transformer.wte.weight'] = { dtype: 'F16', shape: wteShape, data: new Uint16Array(320 * 32) };
  assert.throws(
    () => GPT.fromNamedTensors(tf, tiny, named),
    /missing: resid_lambdas; mismatched: transformer\.wte\.weight \(expected F32, got F16\)/,
  );
  src.dispose();
});

test('fromNamedTensors reads unaligned little-endian views', () => {
  const src = GPT.initialize(tf, tiny, 3);
  const named = src.namedTensors();
  const shifted: NamedTensors = {};
  for (const [name, t] of Object.entries(named)) {
    const raw = new Uint8Array(t.data.byteLength + 1);
    raw.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 1);
    shifted[name] = { ...t, data: raw.subarray(1) }; // byteOffset 1: not 4-aligned
  }
  const copy = GPT.fromNamedTensors(tf, tiny, shifted);
  const a = bits(named);
  for (const [name, buf] of bits(copy.namedTensors())) assert.ok(buf.equals(a.get(name)!), name);
  src.dispose();
  copy.dispose();
});

test('logits: shape, causality, and loss ignores targets < 0', () => {
  const model = GPT.initialize(tf, normalizeConfig({ ...tiny, n_kv_head: 1, window_pattern: 'SL' }), 5);
  // Give the zero-initialised projections some weight so every layer mixes positions.
  for (const [name, v] of model.parameters())
    if (name.endsWith('c_proj.weight')) v.assign(tf.randomNormal(v.shape, 0, 0.2, 'float32', 1));
  const x = tokens(2, 12);
  const logits = model.logits(x);
  assert.deepEqual(logits.shape, [2, 12, 257]);
  // Change the last token: earlier positions must not see it.
  const ids = x.arraySync();
  ids[0]![11] = (ids[0]![11]! + 1) % 256;
  const x2 = tf.tensor2d(ids, [2, 12], 'int32');
  const l1 = logits.arraySync();
  const l2 = model.logits(x2).arraySync();
  assert.deepEqual(l1[0]!.slice(0, 11), l2[0]!.slice(0, 11));
  assert.notDeepEqual(l1[0]![11], l2[0]![11]);
  assert.ok(
    l1.flat(2).every((v) => Math.abs(v) <= 15),
    'softcapped',
  );
  // loss with half the targets ignored equals the loss over the other half.
  const y = tokens(2, 12, 3).arraySync();
  const yMasked = y.map((row) => row.map((v, t) => (t < 6 ? -1 : v)));
  const full = model.loss(x, tf.tensor2d(y, [2, 12], 'int32')).dataSync()[0]!;
  const masked = model.loss(x, tf.tensor2d(yMasked, [2, 12], 'int32')).dataSync()[0]!;
  const lp = tf.logSoftmax(logits).arraySync();
  let sum = 0;
  for (let b = 0; b < 2; b++) for (let t = 6; t < 12; t++) sum -= lp[b]![t]![y[b]![t]!]!;
  assert.ok(Math.abs(masked - sum / 12) < 1e-4, `${masked} vs ${sum / 12}`);
  assert.ok(Number.isFinite(full) && full > 0);
  assert.throws(() => model.logits(tokens(1, 17)), /sequence_len/);
  assert.throws(() => model.logits(tf.zeros([1, 4]) as ReturnType<TF['tensor2d']>), /int32/);
  assert.throws(
    () => model.logits(tf.tensor2d([[1, 257]], [1, 2], 'int32')),
    /id 257 is outside the vocabulary/,
  );
  model.dispose();
});

test('sliding-window mask: S sees the last sequence_len/2 tokens, L sees all, GQA rows repeat', () => {
  const T = 6;
  const at = (m: Float32Array, r: number, j: number) => m[r * T + j] === 0;
  const s = attentionMask(T, 2, 1);
  assert.ok(at(s, 5, 5) && at(s, 5, 4) && at(s, 5, 3) && !at(s, 5, 2) && !at(s, 2, 3));
  const l = attentionMask(T, Infinity, 2);
  assert.ok(at(l, 5, 0) && !at(l, 0, 1) && at(l, T + 5, 0) && !at(l, T, 1));
});

test('an S layer attends to the current and previous sequence_len/2 tokens only (short_window half)', () => {
  // Layer 1 (always full) gets a zero attention projection, so only layer 0 mixes positions; no smear, which
  // mixes each token's previous one in before the first layer.
  const config = normalizeConfig({ ...tiny, window_pattern: 'S', short_window: 'half', smear: false }); // window 8
  const model = GPT.initialize(tf, config, 9);
  model
    .parameters()
    .get('transformer.h.0.attn.c_proj.weight')!
    .assign(tf.randomNormal([32, 32], 0, 0.3, 'float32', 2));
  const base = tokens(1, 16);
  const last = (ids: number[][]) => model.logits(tf.tensor2d(ids, [1, 16], 'int32')).arraySync()[0]![15]!;
  const ref = last(base.arraySync());
  const edit = (pos: number) =>
    base.arraySync().map((row) => row.map((v, t) => (t === pos ? (v + 1) % 256 : v)));
  assert.deepEqual(last(edit(6)), ref, 'token 6 is outside the window of position 15');
  assert.notDeepEqual(last(edit(7)), ref, 'token 7 is inside the window');
  model.dispose();
});

test('a one-layer model, and GQA, produce a gradient for every parameter', () => {
  for (const config of [
    normalizeConfig({ ...tiny, n_layer: 1 }),
    normalizeConfig({ ...tiny, n_head: 2, n_kv_head: 1, window_pattern: 'SL' }),
  ]) {
    const model = GPT.initialize(tf, config, 4);
    const { loss, grads } = model.lossAndGrads(tokens(2, 16), tokens(2, 16, 1));
    assert.deepEqual([...grads.keys()], Object.keys(parameterShapes(config)));
    for (const [name, g] of grads) assert.deepEqual(g.shape, parameterShapes(config)[name], name);
    // c_proj starts at zero, so the output projections (and lm_head, resid scalars) get signal at step 0.
    assert.ok(tf.abs(grads.get('lm_head.weight')!).sum().dataSync()[0]! > 0);
    assert.ok(tf.abs(grads.get('transformer.h.0.attn.c_proj.weight')!).sum().dataSync()[0]! > 0);
    assert.ok(Number.isFinite(loss.dataSync()[0]!));
    tf.dispose([loss, ...grads.values()]);
    model.dispose();
  }
});

test('namedTensors() is a snapshot: later training and writes into it do not reach each other (wasm, no extra copy)', () => {
  const model = GPT.initialize(tf, tiny, 3);
  const snap = model.namedTensors();
  const again = model.namedTensors();
  const name = Object.keys(snap)[0]!;
  const before = Float32Array.from(snap[name]!.data as Float32Array);
  (snap[name]!.data as Float32Array).fill(7);
  assert.deepEqual(
    Float32Array.from(again[name]!.data as Float32Array),
    before,
    'a second snapshot is independent of the first',
  );
  for (const v of model.parameters().values()) v.assign(tf.zerosLike(v));
  assert.deepEqual(
    Float32Array.from(again[name]!.data as Float32Array),
    before,
    'the snapshot keeps its values after the weights change',
  );
  assert.notDeepEqual(Float32Array.from(model.namedTensors()[name]!.data as Float32Array), before);
  model.dispose();
});

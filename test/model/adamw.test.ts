import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, decays } from '../../model/adamw';
import { TEST_BACKEND } from '../helpers/backend';
import { initBackend, type TF } from '../../model/backend';
import { ModelInputError, TensorSetMismatchError } from '../../model/errors';
import type { Variable, Tensor as TfTensor } from '@tensorflow/tfjs';

let tf: TF;
before(async () => {
  tf = (await initBackend({ force: TEST_BACKEND, log: () => undefined })).tf;
});

let uid = 0;
function params(): Map<string, Variable> {
  const id = ++uid;
  return new Map<string, Variable>([
    ['h.0.w', tf.variable(tf.tensor2d([0.5, -1, 2, 0.25], [2, 2]), true, `adamw-test${id}/w`)],
    ['transformer.wte.weight', tf.variable(tf.tensor2d([1, 2, 3, 4], [2, 2]), true, `adamw-test${id}/wte`)],
    ['resid_lambdas', tf.variable(tf.tensor1d([1, 1]), true, `adamw-test${id}/lambdas`)],
  ]);
}
const gradsAt = (step: number) =>
  new Map<string, TfTensor>([
    ['h.0.w', tf.tensor2d([0.1 * step, -0.2, 0.3, 0.05], [2, 2])],
    ['transformer.wte.weight', tf.tensor2d([0.01, 0.02, -0.03, 0.5], [2, 2])],
    ['resid_lambdas', tf.tensor1d([-0.5, 0.125 * step])],
  ]);

test('decay applies to matrices except the token embedding', () => {
  assert.equal(decays('transformer.h.0.attn.c_q.weight', [64, 64]), true);
  assert.equal(decays('lm_head.weight', [257, 64]), true);
  assert.equal(decays('transformer.wte.weight', [257, 64]), false);
  assert.equal(decays('resid_lambdas', [2]), false);
});

test('updates match a float64 reference of torch.optim.AdamW', () => {
  const p = params();
  const init = new Map([...p].map(([k, v]) => [k, Array.from(v.dataSync())]));
  const opt = new AdamW(tf, p, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
  const lr = 0.01;
  const ref = new Map([...init].map(([k, v]) => [k, { p: [...v], m: v.map(() => 0), v: v.map(() => 0) }]));
  for (let step = 1; step <= 3; step++) {
    const g = gradsAt(step);
    opt.apply(g, lr);
    for (const [name, st] of ref) {
      const gv = Array.from(g.get(name)!.dataSync());
      const decay = name === 'h.0.w';
      st.p = st.p.map((x, i) => {
        const m = (st.m[i] = 0.9 * st.m[i]! + 0.1 * gv[i]!);
        const v = (st.v[i] = 0.95 * st.v[i]! + 0.05 * gv[i]! * gv[i]!);
        const denom = Math.sqrt(v) / Math.sqrt(1 - 0.95 ** step) + 1e-8;
        return (decay ? x * (1 - lr * 0.1) : x) - (lr / (1 - 0.9 ** step)) * (m / denom);
      });
    }
    tf.dispose([...g.values()]);
  }
  assert.equal(opt.step, 3);
  for (const [name, st] of ref) {
    const got = Array.from(p.get(name)!.dataSync());
    got.forEach((x, i) => assert.ok(Math.abs(x - st.p[i]!) < 1e-6, `${name}[${i}]: ${x} vs ${st.p[i]}`));
  }
  opt.dispose();
});

test('stateTensors names, dtypes and an I64 step that round-trips through fromState', () => {
  const p = params();
  const opt = new AdamW(tf, p);
  for (let s = 1; s <= 2; s++) opt.apply(gradsAt(s), 0.01);
  const state = opt.stateTensors();
  assert.deepEqual(Object.keys(state), [
    'h.0.w.exp_avg',
    'h.0.w.exp_avg_sq',
    'transformer.wte.weight.exp_avg',
    'transformer.wte.weight.exp_avg_sq',
    'resid_lambdas.exp_avg',
    'resid_lambdas.exp_avg_sq',
    'step',
  ]);
  assert.deepEqual(state['step'], { dtype: 'I64', shape: [], data: BigInt64Array.of(2n) });
  assert.equal(state['h.0.w.exp_avg']!.dtype, 'F32');
  assert.deepEqual(state['resid_lambdas.exp_avg_sq']!.shape, [2]);
  const restored = AdamW.fromState(tf, p, state);
  assert.equal(restored.step, 2);
  assert.deepEqual(restored.stateTensors(), state);
  opt.dispose();
  restored.dispose();
});

test('fromState lists missing, unexpected and mis-shaped state in one error', () => {
  const p = params();
  const opt = new AdamW(tf, p);
  const state = opt.stateTensors();
  delete state['h.0.w.exp_avg_sq'];
  state['extra.exp_avg'] = { dtype: 'F32', shape: [1], data: new Float32Array(1) };
  state['resid_lambdas.exp_avg'] = { dtype: 'F32', shape: [3], data: new Float32Array(3) };
  state['step'] = { dtype: 'F64', shape: [], data: Float64Array.of(1) };
  assert.throws(
    () => AdamW.fromState(tf, p, state),
    (err: unknown) => {
      assert.ok(err instanceof TensorSetMismatchError);
      assert.deepEqual(err.missing, ['h.0.w.exp_avg_sq']);
      assert.deepEqual(err.unexpected, ['extra.exp_avg']);
      assert.deepEqual(
        err.mismatched.map((m) => m.name),
        ['resid_lambdas.exp_avg', 'step'],
      );
      assert.match(err.message, /optimizer state do not match/);
      return true;
    },
  );
  opt.dispose();
});

test('owned: only the owned parameters get state and updates', () => {
  const p = params();
  const before = new Map([...p].map(([k, v]) => [k, Array.from(v.dataSync())]));
  const opt = new AdamW(tf, p, { owned: ['resid_lambdas', 'h.0.w'] });
  assert.deepEqual(opt.owned, ['h.0.w', 'resid_lambdas']); // model order
  opt.apply(gradsAt(1), 0.01); // the grad for the embedding (owned by another rank) is ignored
  assert.deepEqual(
    Array.from(p.get('transformer.wte.weight')!.dataSync()),
    before.get('transformer.wte.weight'),
  );
  assert.notDeepEqual(Array.from(p.get('h.0.w')!.dataSync()), before.get('h.0.w'));
  const state = opt.stateTensors();
  assert.deepEqual(Object.keys(state), [
    'h.0.w.exp_avg',
    'h.0.w.exp_avg_sq',
    'resid_lambdas.exp_avg',
    'resid_lambdas.exp_avg_sq',
    'step',
  ]);
  // Restoring this shard as a different shard fails loudly.
  assert.throws(
    () => AdamW.fromState(tf, p, state, { owned: ['transformer.wte.weight'] }),
    TensorSetMismatchError,
  );
  assert.throws(() => new AdamW(tf, p, { owned: ['nope'] }), ModelInputError);
  // A missing gradient for an owned parameter or a gradient for an unknown one is an error.
  const g = gradsAt(2);
  g.delete('h.0.w');
  g.set('ghost', tf.zeros([1]));
  assert.throws(() => opt.apply(g, 0.01), /gradients do not match: missing: h\.0\.w; unexpected: ghost/);
  assert.equal(opt.step, 1);
  opt.dispose();
});

test('options are validated', () => {
  const p = params();
  for (const [field, options] of [
    ['beta1', { beta1: 1 }],
    ['beta2', { beta2: -0.1 }],
    ['eps', { eps: 0 }],
    ['weightDecay', { weightDecay: Number.NaN }],
  ] as const) {
    assert.throws(
      () => new AdamW(tf, p, options),
      (err: unknown) => err instanceof ModelInputError && err.field === field,
    );
  }
  const opt = new AdamW(tf, p);
  assert.throws(
    () => opt.apply(gradsAt(1), -1),
    (err: unknown) => err instanceof ModelInputError && err.field === 'lr',
  );
  opt.dispose();
});

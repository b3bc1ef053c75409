import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW } from '../../model/adamw';
import { TEST_BACKEND } from '../helpers/backend';
import { initBackend, type TF } from '../../model/backend';
import { DEFAULT_CONFIG, GPT, normalizeConfig } from '../../model/gpt';
import { ByteTokenizer } from '../../model/tokenizer';
import type { NamedTensors } from '../../checkpoint/tensors';

let tf: TF;
before(async () => {
  tf = (await initBackend({ force: TEST_BACKEND, log: () => undefined })).tf;
});

const config = normalizeConfig(DEFAULT_CONFIG); // d2, n_embd 64, seq 64
const B = 8;
const T = config.sequence_len;
const text = new ByteTokenizer().encode(
  'The quick brown fox jumps over the lazy dog. A stitch in time saves nine. '.repeat(40),
);

/** Batch `step`: B windows at fixed, step-dependent offsets (a pure function of the step). */
function batch(step: number) {
  const x: number[] = [];
  const y: number[] = [];
  for (let b = 0; b < B; b++) {
    const start = ((step * B + b) * 131) % (text.length - T - 1);
    x.push(...text.slice(start, start + T));
    y.push(...text.slice(start + 1, start + T + 1));
  }
  return [tf.tensor2d(x, [B, T], 'int32'), tf.tensor2d(y, [B, T], 'int32')] as const;
}

function trainSteps(model: GPT, opt: AdamW, from: number, to: number, lr = 3e-3): number[] {
  const losses: number[] = [];
  for (let step = from; step < to; step++) {
    const [x, y] = batch(step);
    const { loss, grads } = model.lossAndGrads(x, y);
    opt.apply(grads, lr);
    losses.push(loss.dataSync()[0]!);
    tf.dispose([x, y, loss, ...grads.values()]);
  }
  return losses;
}

function sameBits(a: NamedTensors, b: NamedTensors): void {
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const [name, t] of Object.entries(a)) {
    const u = b[name]!;
    const ab = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const bb = Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength);
    assert.ok(ab.equals(bb), `${name} differs`);
  }
}

test('the default tiny model learns: loss falls within 30 steps, no tensor leak', () => {
  const model = GPT.initialize(tf, config, 0);
  const opt = new AdamW(tf, model.parameters());
  const losses = trainSteps(model, opt, 0, 1); // the first step also builds the rotary/mask caches
  const before = tf.memory().numTensors;
  losses.push(...trainSteps(model, opt, 1, 30));
  assert.equal(tf.memory().numTensors, before, 'no tensors leaked per step');
  const first = losses[0]!;
  const last = losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
  assert.ok(Math.abs(first - Math.log(257)) < 0.05, `starts at ~ln(vocab) (tiny lm_head init): ${first}`);
  if (process.env.SHOW_LOSS) console.log(losses.map((l) => l.toFixed(2)).join(' '));
  assert.ok(last < first - 1.5, `loss fell: ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  opt.dispose();
  model.dispose();
});

test('AdamW state round trip: 10 steps == 5 steps + save/restore + 5 steps, bitwise', () => {
  const options = { weightDecay: 0.1 };
  const straightModel = GPT.initialize(tf, config, 11);
  const straightOpt = new AdamW(tf, straightModel.parameters(), options);
  const straightLosses = trainSteps(straightModel, straightOpt, 0, 10);

  const first = GPT.initialize(tf, config, 11);
  const firstOpt = new AdamW(tf, first.parameters(), options);
  const losses = trainSteps(first, firstOpt, 0, 5);
  // "Save": host copies only, then throw the live objects away.
  const savedModel = first.namedTensors();
  const savedState = firstOpt.stateTensors();
  firstOpt.dispose();
  first.dispose();
  assert.equal(savedState['step']!.dtype, 'I64');
  assert.equal((savedState['step']!.data as BigInt64Array)[0], 5n);

  const resumed = GPT.fromNamedTensors(tf, config, savedModel);
  const resumedOpt = AdamW.fromState(tf, resumed.parameters(), savedState, options);
  assert.equal(resumedOpt.step, 5);
  losses.push(...trainSteps(resumed, resumedOpt, 5, 10));

  assert.deepEqual(losses, straightLosses);
  sameBits(resumed.namedTensors(), straightModel.namedTensors());
  sameBits(resumedOpt.stateTensors(), straightOpt.stateTensors());
  [straightOpt, resumedOpt, straightModel, resumed].forEach((o) => o.dispose());
});

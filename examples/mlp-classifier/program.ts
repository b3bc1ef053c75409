/**
 * A training program that is not the GPT: a small MLP classifier built as a `tf.LayersModel`
 * (`tf.sequential`), trained with a TensorFlow.js optimizer (`tf.train.adam`) on Gaussian blobs that it
 * generates from the seed (no download). It needs nothing from temporal-ckpt but the contract's types, and
 * its defaults are complete, so it trains with no flags at all:
 *
 *   ckpt train --program examples/mlp-classifier/program.ts --root runs --steps 50 --save-every 10
 *   ckpt eval runs/base_checkpoints/mlp --program examples/mlp-classifier/program.ts
 *
 * Resume is bitwise exact: the data of every sample is a pure function of (seed, sample index), and the
 * checkpoint holds the weights and the whole optimizer state (Adam's moments, its step count and its bias
 * correction accumulators).
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { Batch, NamedTensors, StepSession, TrainingProgram } from 'temporal-ckpt/program';

interface Config {
  /** Input features. */
  features: number;
  classes: number;
  hidden: number;
  lr: number;
  /** Held-out samples scored by evaluate(). */
  heldOut: number;
}

const DEFAULTS: Config = { features: 8, classes: 4, hidden: 32, lr: 0.01, heldOut: 512 };

/** The model's weights in model.weights order, under names that do not depend on tfjs's naming counters. */
const WEIGHTS = ['hidden.kernel', 'hidden.bias', 'logits.kernel', 'logits.bias'];

// ---- data: counter-based, so sample i is the same whichever process or rank draws it ----

/** A 32-bit hash of (seed, stream, index) → uniform in (0, 1). */
function uniform(seed: number, stream: number, index: number): number {
  let h = (seed ^ Math.imul(stream + 1, 0x9e3779b1) ^ Math.imul(index, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return (h + 0.5) / 4294967296;
}

function normal(seed: number, stream: number, index: number): number {
  const u = uniform(seed, stream, 2 * index);
  const v = uniform(seed, stream, 2 * index + 1);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Samples [start, start + count): features (class centre + unit noise) and labels. Held out: its own stream. */
function samples(config: Config, seed: number, start: number, count: number, heldOut = false) {
  const { features: D, classes: K } = config;
  const x = new Float32Array(count * D);
  const labels = new Int32Array(count);
  const stream = heldOut ? 1_000 : 0;
  for (let s = 0; s < count; s++) {
    const i = start + s;
    const k = Math.floor(uniform(seed, stream + 1, i) * K);
    labels[s] = k;
    for (let d = 0; d < D; d++) {
      // Class centres are fixed by the seed: 2 units apart on average, so the task is learnable, not trivial.
      const centre = 2 * normal(seed, 2, k * D + d);
      x[s * D + d] = centre + normal(seed, stream + 3, i * D + d);
    }
  }
  return { x, labels };
}

// ---- model ----

function buildModel(tf: typeof tfjs, config: Config, seed: number): tfjs.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [config.features],
        units: config.hidden,
        activation: 'relu',
        name: 'hidden',
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
      }),
      tf.layers.dense({
        units: config.classes,
        name: 'logits',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
      }),
    ],
  });
}

function f32(values: Float32Array, shape: readonly number[]) {
  return { dtype: 'F32' as const, shape: [...shape], data: values };
}

function asFloat32(t: NamedTensors[string]): Float32Array {
  const d = t.data;
  return new Float32Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
}

function loss(tf: typeof tfjs, model: tfjs.Sequential, config: Config, x: Float32Array, labels: Int32Array) {
  return tf.tidy(() => {
    const inputs = tf.tensor2d(x, [labels.length, config.features]);
    const targets = tf.oneHot(tf.tensor1d(labels, 'int32'), config.classes);
    return tf.losses.softmaxCrossEntropy(targets, model.apply(inputs) as tfjs.Tensor) as tfjs.Scalar;
  });
}

function setWeights(tf: typeof tfjs, model: tfjs.Sequential, tensors: NamedTensors): void {
  const values = WEIGHTS.map((name, i) => {
    const t = tensors[name];
    if (!t) throw new Error(`checkpoint has no tensor ${name}`);
    return tf.tensor(asFloat32(t), model.weights[i]!.shape as number[], 'float32');
  });
  model.setWeights(values);
  tf.dispose(values);
}

// Adam's private bias-correction accumulators (beta^t, kept by repeated multiplication). setWeights()
// recomputes them with pow(), which can differ in the last bit; saving and restoring them keeps resume exact.
type AdamInternals = { accBeta1: tfjs.Variable; accBeta2: tfjs.Variable };

const program: TrainingProgram<Config> = {
  name: 'mlp-classifier',
  version: 1,
  description: 'an MLP classifier (tf.sequential, tf.train.adam) on Gaussian blobs made from the seed',
  metric: { name: 'val_accuracy', mode: 'max' },
  optimizer: 'program',
  defaultBatch: 32,

  configure(given) {
    const config = { ...DEFAULTS, ...given } as Config;
    for (const key of Object.keys(config)) {
      if (!(key in DEFAULTS))
        throw new Error(`unknown config key ${key} (known: ${Object.keys(DEFAULTS).join(', ')})`);
    }
    for (const key of ['features', 'classes', 'hidden', 'heldOut'] as const) {
      if (!Number.isSafeInteger(config[key]) || config[key] < 1)
        throw new Error(`config ${key} must be an integer >= 1`);
    }
    if (!(config.lr > 0)) throw new Error('config lr must be > 0');
    return config;
  },

  defaultTag: () => 'mlp',

  async start({ tf, config, loop, restore }): Promise<StepSession> {
    const model = buildModel(tf, config, loop.seed);
    const optimizer = tf.train.adam(config.lr);
    const variables = () => model.trainableWeights.map((w) => w.read() as tfjs.Variable);
    if (restore) {
      setWeights(tf, model, restore.model);
      const o = restore.optimizer;
      if (o) {
        const moments = (kind: 'm' | 'v') =>
          WEIGHTS.map((name, i) => ({
            name: `${name}/${kind}`,
            tensor: tf.tensor(asFloat32(o[`adam.${kind}.${name}`]!), model.weights[i]!.shape as number[]),
          }));
        // setWeights is async (it reads the step count back); the first step must wait for it.
        await optimizer.setWeights([
          { name: 'iter', tensor: tf.scalar(asFloat32(o['adam.iterations']!)[0]!, 'int32') },
          ...moments('m'),
          ...moments('v'),
        ]);
        const acc = optimizer as unknown as AdamInternals;
        acc.accBeta1.assign(tf.scalar(asFloat32(o['adam.acc_beta1']!)[0]!));
        acc.accBeta2.assign(tf.scalar(asFloat32(o['adam.acc_beta2']!)[0]!));
      }
    }
    const data = (batch: Batch) => samples(config, loop.seed, batch.start, batch.count);
    return {
      kind: 'step',
      step(batch) {
        const { x, labels } = data(batch);
        const cost = optimizer.minimize(() => loss(tf, model, config, x, labels), true, variables());
        const value = cost!.dataSync()[0]!;
        cost!.dispose();
        return value;
      },
      gradients(batch) {
        const { x, labels } = data(batch);
        const vars = variables();
        const { value, grads } = tf.variableGrads(() => loss(tf, model, config, x, labels), vars);
        const out = new Map<string, Float32Array>();
        vars.forEach((v, i) => out.set(WEIGHTS[i]!, grads[v.name]!.dataSync() as Float32Array));
        const l = value.dataSync()[0]!;
        tf.dispose([value, ...Object.values(grads)]);
        return { loss: l, grads: out };
      },
      applyGradients(grads) {
        const named = variables().map((v, i) => ({
          name: v.name,
          tensor: tf.tensor(grads.get(WEIGHTS[i]!)!, v.shape),
        }));
        optimizer.applyGradients(named);
        tf.dispose(named.map((n) => n.tensor));
      },
      modelTensors() {
        const out: NamedTensors = {};
        model.weights.forEach(
          (w, i) => (out[WEIGHTS[i]!] = f32(w.read().dataSync() as Float32Array, w.shape as number[])),
        );
        return out;
      },
      optimizerTensors() {
        const acc = optimizer as unknown as AdamInternals;
        const out: NamedTensors = {
          'adam.iterations': f32(new Float32Array([optimizer.iterations]), []),
          'adam.acc_beta1': f32(acc.accBeta1.dataSync() as Float32Array, []),
          'adam.acc_beta2': f32(acc.accBeta2.dataSync() as Float32Array, []),
        };
        // Adam creates its moments at the first update, in the order of the variables it is given.
        const internals = optimizer as unknown as {
          accumulatedFirstMoment: Array<{ variable: tfjs.Variable }>;
          accumulatedSecondMoment: Array<{ variable: tfjs.Variable }>;
        };
        WEIGHTS.forEach((name, i) => {
          const m = internals.accumulatedFirstMoment[i]?.variable;
          const v = internals.accumulatedSecondMoment[i]?.variable;
          const shape = model.weights[i]!.shape as number[];
          const size = shape.reduce((a, b) => a * b, 1);
          out[`adam.m.${name}`] = f32(m ? (m.dataSync() as Float32Array) : new Float32Array(size), shape);
          out[`adam.v.${name}`] = f32(v ? (v.dataSync() as Float32Array) : new Float32Array(size), shape);
        });
        return out;
      },
      dispose() {
        optimizer.dispose();
        model.dispose();
      },
    };
  },

  async evaluate({ tf, config, loop, loadModelTensors }) {
    const model = buildModel(tf, config, loop.seed);
    try {
      setWeights(tf, model, await loadModelTensors());
      const { x, labels } = samples(config, loop.seed, 0, config.heldOut, true);
      const valLoss = loss(tf, model, config, x, labels);
      const predicted = tf.tidy(() =>
        (model.apply(tf.tensor2d(x, [labels.length, config.features])) as tfjs.Tensor).argMax(-1).dataSync(),
      );
      let correct = 0;
      predicted.forEach((p, i) => (correct += p === labels[i] ? 1 : 0));
      const result = { val_accuracy: correct / labels.length, val_loss: valLoss.dataSync()[0]! };
      valLoss.dispose();
      return result;
    } finally {
      model.dispose();
    }
  },
};

export default program;

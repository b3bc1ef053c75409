/**
 * A whole training program in one CommonJS file, as a user would write it: a linear regression whose
 * optimizer the loop owns (AdamW). Shared by the tests that load a program by path from outside the
 * repository (test/program) and from an installed package (test/package).
 */

/** The program's source: `module.exports = {…}`, or wrapped in `defineProgram` from the installed package. */
export function linearProgram(version: number, options: { defineProgram?: boolean } = {}): string {
  const source = LINEAR.replace('version: VERSION', `version: ${version}`);
  if (!options.defineProgram) return source;
  return (
    "const { defineProgram } = require('temporal-ckpt/program');\n" +
    source.replace('module.exports = {', 'module.exports = defineProgram({').replace(/};\n$/, '});\n')
  );
}

const LINEAR = `
const F = 3;
// Sample i: features from a fixed rule, target a fixed linear function of them (no randomness needed).
function batchOf(start, count) {
  const x = new Float32Array(count * F);
  const y = new Float32Array(count);
  for (let s = 0; s < count; s++) {
    let target = 0;
    for (let j = 0; j < F; j++) {
      const v = (((start + s) * 7 + j * 3) % 11) / 11;
      x[s * F + j] = v;
      target += v * (j + 1);
    }
    y[s] = target;
  }
  return { x, y };
}
const f32 = (t) => new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
module.exports = {
  name: 'linear',
  version: VERSION,
  metric: { name: 'mse', mode: 'min' },
  optimizer: 'loop',
  defaultBatch: 4,
  configure: (given) => ({ ...given }),
  defaultTag: () => 'linear',
  start({ tf, restore }) {
    const w = tf.variable(restore ? tf.tensor(f32(restore.model.w), [F, 1]) : tf.zeros([F, 1]));
    const loss = (x, y, n) => tf.losses.meanSquaredError(tf.tensor1d(y), tf.matMul(tf.tensor2d(x, [n, F]), w).reshape([n]));
    return {
      kind: 'gradients',
      parameters: () => new Map([['w', w]]),
      lossAndGrads(batch) {
        const { x, y } = batchOf(batch.start, batch.count);
        const { value, grads } = tf.variableGrads(() => loss(x, y, batch.count), [w]);
        return { loss: value, grads: new Map([['w', grads[w.name]]]) };
      },
      modelTensors: () => ({ w: { dtype: 'F32', shape: [F, 1], data: w.dataSync().slice() } }),
      dispose: () => w.dispose(),
    };
  },
  async evaluate({ tf, loadModelTensors }) {
    const w = tf.tensor(f32((await loadModelTensors()).w), [F, 1]);
    const { x, y } = batchOf(1000, 64);
    const mse = tf.losses.meanSquaredError(tf.tensor1d(y), tf.matMul(tf.tensor2d(x, [64, F]), w).reshape([64]));
    return { mse: mse.dataSync()[0] };
  },
};
`;

/**
 * SnapshotBuffers (model/tensors.ts): the async save's reusable host memory. Inside capture(), f32Copy
 * writes into the same SharedArrayBuffers save after save (straight out of the wasm heap on wasm), with
 * exactly the values dataSync gives; outside it, f32Copy is unchanged.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { initBackend, type BackendChoice } from '../../model/backend';
import { f32Copy, SnapshotBuffers } from '../../model/tensors';

for (const backend of ['wasm', 'cpu'] as BackendChoice[]) {
  describe(`snapshot buffers on ${backend}`, () => {
    it('copies the exact values into the same shared buffers at every capture', async () => {
      const { tf } = await initBackend({ force: backend, log: () => undefined });
      const a = tf.variable(tf.randomNormal([64, 33], 0, 1, 'float32', 1));
      const b = tf.variable(tf.randomUniform([7], -1, 1, 'float32', 2));
      const buffers = new SnapshotBuffers();
      const take = () => ({ a: f32Copy(a), b: f32Copy(b) });

      const first = buffers.capture(take);
      assert.ok(first.a.data.buffer instanceof SharedArrayBuffer);
      assert.deepEqual(first.a.shape, [64, 33]);
      assert.deepEqual(Array.from(first.a.data as Float32Array), Array.from(a.dataSync()));
      assert.deepEqual(Array.from(first.b.data as Float32Array), Array.from(b.dataSync()));
      assert.equal(buffers.bytes, (64 * 33 + 7) * 4);

      // The tensors change (as a training step changes them): the next capture reuses the buffers.
      a.assign(tf.mul(a, 3));
      b.assign(tf.add(b, 1));
      const second = buffers.capture(take);
      assert.equal(second.a.data, first.a.data);
      assert.equal(second.b.data, first.b.data);
      assert.deepEqual(Array.from(second.a.data as Float32Array), Array.from(a.dataSync()));
      assert.deepEqual(Array.from(second.b.data as Float32Array), Array.from(b.dataSync()));
      assert.equal(buffers.bytes, (64 * 33 + 7) * 4);

      // Outside a capture, f32Copy gives an ordinary array of its own.
      const plain = f32Copy(a);
      assert.ok(plain.data.buffer instanceof ArrayBuffer);
      assert.notEqual(plain.data, second.a.data);
      a.dispose();
      b.dispose();
    });
  });
}

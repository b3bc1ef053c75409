/**
 * One training slot per GPU: which GPUs a worker has (CKPT_GPUS, nvidia-smi, the worker's own
 * CUDA_VISIBLE_DEVICES), and the slots its children take (each sees one GPU).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  configureGpuSlots,
  GpuSlots,
  gpusFromEnv,
  gpuSlotsConfigured,
  trainingSlots,
  withGpuSlot,
} from '../../activities/gpus';

after(() => configureGpuSlots(undefined));

const never = () => assert.fail('nvidia-smi was asked');

describe('GPU slots', () => {
  it('reads CKPT_GPUS: a list, none, or auto (nvidia-smi, unless CUDA_VISIBLE_DEVICES restricts it)', () => {
    assert.deepEqual(gpusFromEnv({ CKPT_GPUS: '0, 2,3' }, never), ['0', '2', '3']);
    assert.deepEqual(gpusFromEnv({ CKPT_GPUS: 'none' }, never), []);
    assert.deepEqual(
      gpusFromEnv({}, () => ['0', '1']),
      ['0', '1'],
    );
    assert.deepEqual(gpusFromEnv({ CKPT_GPUS: 'auto', CUDA_VISIBLE_DEVICES: '1,3' }, never), ['1', '3']);
    assert.deepEqual(gpusFromEnv({ CUDA_VISIBLE_DEVICES: '' }, never), []);
    assert.deepEqual(gpusFromEnv({ CKPT_GPUS: 'GPU-8a1f-22' }, never), ['GPU-8a1f-22']);
    assert.throws(() => gpusFromEnv({ CKPT_GPUS: '0,../x' }, never), /CKPT_GPUS: "\.\.\/x" is not a GPU/);
    assert.throws(
      () => gpusFromEnv({ CKPT_GPUS: '0,2', CUDA_VISIBLE_DEVICES: '0,1' }, never),
      /names GPU\(s\) 2 that this worker's CUDA_VISIBLE_DEVICES \(0,1\) hides/,
    );
  });

  it('gives each running child its own GPU, the lowest free slot first', () => {
    const slots = new GpuSlots(['4', '5'], 2);
    const a = slots.acquire()!;
    const b = slots.acquire()!;
    assert.deepEqual([a.device, b.device], ['4', '5']);
    assert.deepEqual(a.env, { CUDA_VISIBLE_DEVICES: '4' });
    a.release();
    a.release();
    assert.deepEqual(slots.inUse(), [1]);
    assert.equal(slots.acquire()!.device, '4');
    // More slots than GPUs share them round robin.
    assert.equal(new GpuSlots(['7'], 3).acquire()!.device, '7');
    assert.equal(new GpuSlots([], 1).acquire(), undefined);
  });

  it('a worker with GPUs runs one slot per GPU unless told, and children run inside a slot', async () => {
    assert.equal(trainingSlots(undefined, ['0', '1', '2']), 3);
    assert.ok(gpuSlotsConfigured());
    assert.equal(trainingSlots(5, ['0', '1']), 5);
    trainingSlots(undefined, ['6', '9']);
    const seen = await Promise.all([
      withGpuSlot(async (env) => {
        await new Promise((r) => setTimeout(r, 20));
        return env?.CUDA_VISIBLE_DEVICES;
      }),
      withGpuSlot(async (env) => env?.CUDA_VISIBLE_DEVICES),
    ]);
    assert.deepEqual(seen.sort(), ['6', '9']);
    // Given back: the next child takes the first GPU again.
    assert.equal(await withGpuSlot(async (env) => env?.CUDA_VISIBLE_DEVICES), '6');
    assert.equal(trainingSlots(undefined, []), 1);
    assert.equal(gpuSlotsConfigured(), false);
    assert.equal(await withGpuSlot(async (env) => env), undefined);
  });
});

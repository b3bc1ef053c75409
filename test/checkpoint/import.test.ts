/**
 * importSafetensors: a safetensors file becomes a committed, verified checkpoint; anything else (a pickle,
 * a torch.save zip, a file that is not safetensors, tensors the caller's check refuses, a committed step)
 * writes nothing.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  AlreadyCommittedError,
  encodeSafetensors,
  f32Tensor,
  fromFloat32,
  importSafetensors,
  InvalidArgumentError,
  loadCheckpoint,
  manifestFile,
  metaFile,
  modelFile,
  type NamedTensors,
  readManifest,
  SafetensorsError,
  toFloat32,
  verifyCheckpoint,
} from '../../checkpoint';
// The GPT's migrations are registered by its program's module.
import '../../model/migrations';
import { LEGACY_ARCHITECTURE } from '../../model/config';
import { tempDir } from '../helpers/tmp';

function weights(): NamedTensors {
  const a = new Float32Array([0.5, -1.25, 3, 7.5, -0.125, 2]);
  return {
    'layer.weight': { dtype: 'BF16', shape: [2, 3], data: fromFloat32(a, [2, 3], 'BF16').data },
    'layer.bias': f32Tensor([3], [1, 2, 3]),
    counter: { dtype: 'I64', shape: [1], data: new BigInt64Array([42n]) },
  };
}

function writeFile(dir: string, tensors: NamedTensors, metadata?: Record<string, string>): string {
  const file = join(dir, 'weights.safetensors');
  writeFileSync(file, encodeSafetensors(tensors, metadata));
  return file;
}

describe('importSafetensors', () => {
  it('commits the tensors with their dtypes, the config and the source in meta, and the checkpoint verifies', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    const file = writeFile(work, weights(), { format: 'pt' });
    const result = await importSafetensors(file, dir, {
      step: 500,
      modelConfig: { n_layer: 1 },
      meta: { note: 'from torch' },
    });
    assert.equal(result.step, 500);
    assert.equal(result.tensors, 3);
    const sha = createHash('sha256').update(readFileSync(file)).digest('hex');
    assert.deepEqual(result.source, {
      file: 'weights.safetensors',
      bytes: readFileSync(file).length,
      sha256: sha,
    });

    const manifest = await readManifest(dir, 500);
    assert.deepEqual(Object.keys(manifest.files).sort(), [metaFile(500), modelFile(500)]);
    assert.equal((await verifyCheckpoint(dir, 500)).ok, true);

    const loaded = await loadCheckpoint(dir, 500, { toFloat32: false, migrate: false });
    assert.equal(loaded.model!['layer.weight']!.dtype, 'BF16');
    assert.deepEqual([...toFloat32(loaded.model!['layer.weight']!)], [0.5, -1.25, 3, 7.5, -0.125, 2]);
    assert.deepEqual([...toFloat32(loaded.model!['layer.bias']!)], [1, 2, 3]);
    assert.equal((loaded.model!.counter!.data as BigInt64Array)[0], 42n);
    assert.deepEqual(loaded.meta.model_config, { n_layer: 1 });
    assert.equal(loaded.meta.note, 'from torch');
    assert.deepEqual(loaded.meta.imported_from, {
      ...result.source,
      format: 'safetensors',
      metadata: { format: 'pt' },
    });
    assert.equal(loaded.optimizer, null);
  });

  it('converts floating tensors with saveDtype and leaves integer tensors alone', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    await importSafetensors(writeFile(work, weights()), dir, { step: 1, saveDtype: 'F16' });
    const loaded = await loadCheckpoint(dir, 1, { toFloat32: false });
    assert.equal(loaded.model!['layer.weight']!.dtype, 'F16');
    assert.equal(loaded.model!['layer.bias']!.dtype, 'F16');
    assert.equal(loaded.model!.counter!.dtype, 'I64');
  });

  it('refuses a step that is already committed and changes nothing', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    const file = writeFile(work, weights());
    await importSafetensors(file, dir, { step: 3 });
    const before = readFileSync(join(dir, manifestFile(3)));
    await assert.rejects(
      importSafetensors(file, dir, { step: 3, meta: { other: true } }),
      AlreadyCommittedError,
    );
    assert.deepEqual(readFileSync(join(dir, manifestFile(3))), before);
  });

  it('refuses a torch.save zip and a pickle without reading them, naming the conversion', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    const zip = join(work, 'model.pt');
    writeFileSync(zip, Buffer.concat([Buffer.from('PK\x03\x04'), Buffer.alloc(64)]));
    const pickle = join(work, 'model.bin');
    writeFileSync(pickle, Buffer.concat([Buffer.from([0x80, 0x04, 0x95]), Buffer.alloc(64)]));
    for (const file of [zip, pickle]) {
      await assert.rejects(importSafetensors(file, dir, { step: 1 }), (err: unknown) => {
        assert.ok(err instanceof SafetensorsError);
        assert.match(err.message, /never read/);
        assert.match(err.message, /safetensors\.torch\.save_file/);
        return true;
      });
    }
    const other = join(work, 'notes.txt');
    writeFileSync(other, 'hello, this is not a tensor file');
    await assert.rejects(importSafetensors(other, dir, { step: 1 }), /not a safetensors file/);
    await assert.rejects(
      importSafetensors(join(work, 'absent.safetensors'), dir, { step: 1 }),
      InvalidArgumentError,
    );
    assert.deepEqual(readdirSync(work).includes('ckpt') ? readdirSync(dir) : [], []);
  });

  it('hands check the tensors as a load sees them (prefixes stripped) and writes nothing when it throws', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    const file = writeFile(work, { '_orig_mod.transformer.wte.weight': f32Tensor([2, 2], [1, 2, 3, 4]) });
    let seen: string[] = [];
    await assert.rejects(
      importSafetensors(file, dir, {
        step: 9,
        modelConfig: { n_layer: 1 },
        check: (tensors, meta) => {
          seen = Object.keys(tensors);
          assert.deepEqual(meta.model_config, { n_layer: 1, window_pattern: 'L', ...LEGACY_ARCHITECTURE });
          throw new InvalidArgumentError('refused by the check');
        },
      }),
      /refused by the check/,
    );
    assert.ok(seen.includes('transformer.wte.weight'));
    assert.ok(!seen.includes('_orig_mod.transformer.wte.weight'));
    assert.deepEqual(readdirSync(work).includes('ckpt') ? readdirSync(dir) : [], []);
  });

  it('refuses a file with no tensors and a model config that is not an object', async () => {
    const work = tempDir();
    const dir = join(work, 'ckpt');
    await assert.rejects(importSafetensors(writeFile(work, {}), dir, { step: 1 }), /no tensors/);
    await assert.rejects(
      importSafetensors(writeFile(work, weights()), dir, {
        step: 1,
        modelConfig: [] as unknown as Record<string, unknown>,
      }),
      /must be a JSON object/,
    );
  });
});

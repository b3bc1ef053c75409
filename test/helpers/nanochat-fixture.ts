/**
 * The nanochat parity fixture (test/fixtures/nanochat, written by scripts/nanochat-parity.py): nanochat's
 * state dict and meta, and the tokens and logits nanochat's own forward pass gave.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, statSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensorsStream } from '../../checkpoint/safetensors-read';
import type { NamedTensors } from '../../checkpoint/tensors';
import { readF32 } from '../../model/tensors';
import { ROOT } from './cli';

export const NANOCHAT_FIXTURE = join(ROOT, 'test', 'fixtures', 'nanochat');
export const NANOCHAT_MODEL = join(NANOCHAT_FIXTURE, 'model_000000.safetensors');
export const NANOCHAT_META = join(NANOCHAT_FIXTURE, 'meta_000000.json');

export async function readTensors(file: string): Promise<NamedTensors> {
  return (await readSafetensorsStream(createReadStream(file), statSync(file).size, { file })).tensors;
}

/** The tokens [T] and nanochat's logits for them ([T * vocab_size], row by row). */
export async function nanochatReference(): Promise<{ tokens: number[]; logits: Float32Array }> {
  const tensors = await readTensors(join(NANOCHAT_FIXTURE, 'reference.safetensors'));
  return {
    tokens: Array.from(tensors.tokens!.data as BigInt64Array, Number),
    logits: readF32(tensors.logits!, 'logits'),
  };
}

/** `ckpt import` the fixture's state dict with its meta as --config, as step 0 of `dir`. */
export function importNanochatFixture(dir: string): void {
  const res = spawnSync(
    process.execPath,
    [join(ROOT, 'bin', 'ckpt.js'), 'import', NANOCHAT_MODEL, dir, '--step', '0', '--config', NANOCHAT_META],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(res.status, 0, res.stderr);
}

/**
 * A training run from before the architecture revisions resumes exactly as that version resumed it.
 * test/fixtures/legacy-gpt holds step 2 of a run written by the previous version (commit a8185b8) with
 * `ckpt train --root R --depth 1 --n-embd 16 --seq-len 16 --batch 2 --steps 2 --save-every 2`; the hashes
 * below are of the files that version wrote when resumed with `--resume --steps 4`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LEGACY_ARCHITECTURE } from '../../model/config';
import { ckpt, ROOT } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

const RESUMED_BY_PREVIOUS_VERSION = {
  'model_000004.safetensors': '77eb04d6b984ec5248de46dbfcfc7fe85cc38c1f0e4a4778b7741f3d76d63e66',
  'optim_000004_rank0.safetensors': '0f6e4e133145443f2b6bbe129cc2c88966a3c6151705786ca94d4f5b8d790f84',
};

describe('a run from before the architecture constants resumes bit for bit', () => {
  it('writes the model and optimizer files the previous version wrote, and records the legacy constants', () => {
    const root = tempDir();
    cpSync(join(ROOT, 'test', 'fixtures', 'legacy-gpt'), root, { recursive: true });
    const res = ckpt(
      ['train', '--root', root, '--depth', '1', '--steps', '4', '--save-every', '2', '--resume'],
      {
        CKPT_BACKEND: 'wasm',
      },
    );
    assert.equal(res.code, 0, res.stderr);
    const dir = join(root, 'base_checkpoints', 'd1');
    for (const [file, sha256] of Object.entries(RESUMED_BY_PREVIOUS_VERSION)) {
      assert.equal(
        createHash('sha256')
          .update(readFileSync(join(dir, file)))
          .digest('hex'),
        sha256,
        file,
      );
    }
    const meta = JSON.parse(readFileSync(join(dir, 'meta_000004.json'), 'utf8')) as {
      model_config: Record<string, unknown>;
      program: { version: number };
    };
    for (const [key, value] of Object.entries(LEGACY_ARCHITECTURE))
      assert.equal(meta.model_config[key], value, key);
    assert.equal(meta.program.version, 2);
  });
});

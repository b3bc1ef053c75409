import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import {
  IntegrityError,
  SchemaError,
  loadCheckpoint,
  manifestFile,
  modelFile,
  readManifest,
  saveCheckpoint,
  verifyCheckpoint,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

const PYTHON_DIR = resolve(__dirname, '..', '..', 'python');

async function saved(): Promise<string> {
  const dir = tempDir();
  await saveCheckpoint(dir, 5, { model: tinyModel(2), optimizer: tinyOptimizer(2), meta: tinyMeta() });
  return dir;
}

/** Rewrites the manifest of step 5 as the previous format wrote it: format_version 1, sha256 records. */
function asVersion1(dir: string): void {
  const path = join(dir, manifestFile(5));
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as {
    format_version: number;
    files: Record<string, { bytes: number; crc32?: string; sha256?: string }>;
  };
  manifest.format_version = 1;
  for (const [name, record] of Object.entries(manifest.files)) {
    delete record.crc32;
    record.sha256 = createHash('sha256')
      .update(readFileSync(join(dir, name)))
      .digest('hex');
  }
  writeFileSync(path, JSON.stringify(manifest, null, 2));
}

function flipLastByte(path: string): void {
  const bytes = readFileSync(path);
  bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0x01, bytes.length - 1);
  writeFileSync(path, bytes);
}

function editManifest(dir: string, edit: (files: Record<string, Record<string, unknown>>) => void): void {
  const path = join(dir, manifestFile(5));
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as {
    files: Record<string, Record<string, unknown>>;
  };
  edit(manifest.files);
  writeFileSync(path, JSON.stringify(manifest));
}

/** The Python client's load of step 5 (Run.load's local path) (stdlib + numpy + safetensors), or null where those are missing. */
function pythonLoad(dir: string): { status: number | null; out: string } | null {
  const probe = spawnSync('python3', ['-c', 'import numpy, safetensors'], { encoding: 'utf8' });
  if (probe.status !== 0) return null;
  const script = `import sys, temporal_ckpt as t\nckpt = t._load_local(sys.argv[1], 5, 0, 0, True)\nprint(sorted(ckpt.model))`;
  const res = spawnSync('python3', ['-c', script, dir], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: PYTHON_DIR },
  });
  return { status: res.status, out: res.stdout + res.stderr };
}

describe('file checksums in the manifest', () => {
  it('records each file with its size and zlib CRC-32 as 8 hex digits, format version 2', async () => {
    const dir = await saved();
    const manifest = await readManifest(dir, 5);
    assert.equal(manifest.format_version, 2);
    for (const [name, record] of Object.entries(manifest.files)) {
      const bytes = readFileSync(join(dir, name));
      assert.deepEqual(record, { bytes: bytes.length, crc32: crc32(bytes).toString(16).padStart(8, '0') });
    }
  });

  it('detects a changed byte by its CRC-32 on load and in verify', async () => {
    const dir = await saved();
    flipLastByte(join(dir, modelFile(5)));
    await assert.rejects(loadCheckpoint(dir, 5), (err: unknown) => {
      assert.ok(err instanceof IntegrityError);
      assert.match(err.message, /model_000005\.safetensors: crc32 is [0-9a-f]{8}, expected [0-9a-f]{8}/);
      return true;
    });
    const result = await verifyCheckpoint(dir, 5);
    assert.deepEqual(
      result.problems.map((p) => [p.file, p.reason]),
      [[modelFile(5), 'crc32']],
    );
  });

  it('keeps verifying manifests of format version 1 (sha256 records), and their corruption', async () => {
    const dir = await saved();
    asVersion1(dir);
    const loaded = await loadCheckpoint(dir, 5);
    assert.deepEqual(Object.keys(loaded.model!).sort(), Object.keys(tinyModel(2)).sort());
    assert.equal((await verifyCheckpoint(dir, 5)).ok, true);
    flipLastByte(join(dir, modelFile(5)));
    await assert.rejects(
      loadCheckpoint(dir, 5),
      /model_000005\.safetensors: sha256 is [0-9a-f]{64}, expected [0-9a-f]{64}/,
    );
    assert.deepEqual(
      (await verifyCheckpoint(dir, 5)).problems.map((p) => p.reason),
      ['sha256'],
    );
  });

  it('checks every checksum a record carries', async () => {
    const dir = await saved();
    editManifest(dir, (files) => {
      files[modelFile(5)]!.sha256 = '0'.repeat(64);
    });
    await assert.rejects(loadCheckpoint(dir, 5), /sha256 is [0-9a-f]{64}, expected 0{64}/);
  });

  it('refuses a record with no checksum, or one not in its form, naming the field', async () => {
    for (const [edit, field] of [
      [(r: Record<string, unknown>) => delete r.crc32, 'crc32'],
      [(r: Record<string, unknown>) => (r.crc32 = 'ABCDEF01'), 'crc32'],
      [(r: Record<string, unknown>) => (r.sha256 = 'abc'), 'sha256'],
    ] as const) {
      const dir = await saved();
      editManifest(dir, (files) => edit(files[modelFile(5)]!));
      await assert.rejects(readManifest(dir, 5), (err: unknown) => {
        assert.ok(err instanceof SchemaError);
        assert.equal(err.field, `files.${modelFile(5)}.${field}`);
        return true;
      });
    }
  });

  it('the Python client verifies both: crc32 (version 2) and sha256 (version 1) manifests', async (t) => {
    const dir = await saved();
    const fresh = pythonLoad(dir);
    if (!fresh) return t.skip('python3 with numpy and safetensors is not installed');
    assert.equal(fresh.status, 0, fresh.out);
    flipLastByte(join(dir, modelFile(5)));
    const corrupt = pythonLoad(dir)!;
    assert.notEqual(corrupt.status, 0);
    assert.match(corrupt.out, /crc32 [0-9a-f]{8} does not match/);

    const old = await saved();
    asVersion1(old);
    const legacy = pythonLoad(old)!;
    assert.equal(legacy.status, 0, legacy.out);
    flipLastByte(join(old, modelFile(5)));
    assert.match(pythonLoad(old)!.out, /sha256 [0-9a-f]{64} does not match/);
  });
});

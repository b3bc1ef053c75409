/**
 * Verification: every file of a committed step is read once and compared with the manifest (size and
 * checksum: crc32, or sha256 in manifests of format version 1). No major checkpoint system checks full contents; this is what lets resume skip a corrupt
 * checkpoint instead of training on garbage.
 */
import { checksumKinds, checksumMismatch, FileDigest, type FileRecord } from './checksum';
import { CheckpointError, describeError } from './errors';
import { readManifest } from './checkpoint';
import { type Location, openStore } from './location';
import type { Manifest } from './manifest';
import { validateStep } from './names';
import type { Store } from './store';

export interface FileProblem {
  file: string;
  reason: 'missing' | 'size' | 'crc32' | 'sha256' | 'manifest' | 'unreadable';
  message: string;
}

export interface VerifyResult {
  step: number;
  ok: boolean;
  problems: FileProblem[];
  bytes: number;
}

export async function verifyCheckpoint(dir: Location, step: number): Promise<VerifyResult> {
  const store = openStore(dir);
  validateStep(step);
  let manifest: Manifest;
  try {
    manifest = await readManifest(store, step);
  } catch (err) {
    if (!(err instanceof CheckpointError)) throw err;
    return {
      step,
      ok: false,
      bytes: 0,
      problems: [{ file: err.file ?? '', reason: 'manifest', message: err.message }],
    };
  }
  const problems: FileProblem[] = [];
  let bytes = 0;
  for (const [file, record] of Object.entries(manifest.files)) {
    const problem = await checkFile(store, file, record);
    if (problem) problems.push(problem);
    bytes += record.bytes;
  }
  return { step, ok: problems.length === 0, problems, bytes };
}

async function checkFile(store: Store, file: string, record: FileRecord): Promise<FileProblem | null> {
  const entry = await store.stat(file);
  if (!entry) return { file, reason: 'missing', message: `${file} is listed in the manifest but missing` };
  if (entry.bytes !== record.bytes) {
    return {
      file,
      reason: 'size',
      message: `${file}: size is ${entry.bytes} bytes, the manifest says ${record.bytes}`,
    };
  }
  const digest = new FileDigest(checksumKinds(record));
  try {
    for await (const chunk of store.stream(file)) digest.update(chunk);
  } catch (err) {
    return { file, reason: 'unreadable', message: `${file}: ${describeError(err)}` };
  }
  const mismatch = checksumMismatch(record, digest.record());
  if (mismatch) {
    const { kind, actual, expected } = mismatch;
    return {
      file,
      reason: kind,
      message: `${file}: ${kind} ${actual} does not match the manifest (${expected})`,
    };
  }
  return null;
}

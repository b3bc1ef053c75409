/**
 * Verification: every file of a committed step is read once and compared with the manifest (size and
 * sha256). No major checkpoint system checks full contents; this is what lets resume skip a corrupt
 * checkpoint instead of training on garbage.
 */
import { createHash } from 'node:crypto';
import { CheckpointError, describeError } from './errors';
import { readManifest } from './checkpoint';
import { type Location, openStore } from './location';
import type { Manifest } from './manifest';
import { validateStep } from './names';
import type { Store } from './store';

export interface FileProblem {
  file: string;
  reason: 'missing' | 'size' | 'sha256' | 'manifest' | 'unreadable';
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
    const problem = await checkFile(store, file, record.bytes, record.sha256);
    if (problem) problems.push(problem);
    bytes += record.bytes;
  }
  return { step, ok: problems.length === 0, problems, bytes };
}

async function checkFile(
  store: Store,
  file: string,
  bytes: number,
  sha256: string,
): Promise<FileProblem | null> {
  const entry = await store.stat(file);
  if (!entry) return { file, reason: 'missing', message: `${file} is listed in the manifest but missing` };
  if (entry.bytes !== bytes) {
    return {
      file,
      reason: 'size',
      message: `${file}: size is ${entry.bytes} bytes, the manifest says ${bytes}`,
    };
  }
  const hash = createHash('sha256');
  try {
    for await (const chunk of store.stream(file)) hash.update(chunk);
  } catch (err) {
    return { file, reason: 'unreadable', message: `${file}: ${describeError(err)}` };
  }
  const actual = hash.digest('hex');
  if (actual !== sha256) {
    return {
      file,
      reason: 'sha256',
      message: `${file}: sha256 ${actual} does not match the manifest (${sha256})`,
    };
  }
  return null;
}

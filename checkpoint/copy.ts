/**
 * Copying committed checkpoints between any two locations (local ↔ S3, S3 ↔ S3, local ↔ local). Each step
 * is committed at the destination by the same protocol as a save: data files published no-replace while
 * their bytes stream through the checksum (crc32 or sha256) that must match the source manifest, the
 * manifest last. A source file that does not match its manifest fails before it is published, so a corrupt
 * source never becomes a committed destination checkpoint; a crash mid-copy leaves orphans that gc collects and a rerun replaces.
 */
import { checksumKinds, checksumMismatch, digestStream, FileDigest, sameContent } from './checksum';
import { checksumError, sizeMismatch } from './checkpoint';
import { committedSteps } from './discovery';
import { CheckpointError, InvalidArgumentError, MissingFileError, NotCommittedError } from './errors';
import { log0, warn0 } from './log';
import { type Location, openStore } from './location';
import { type FileRecord, parseManifest } from './manifest';
import { evalFile, manifestFile, validateStep } from './names';
import { AlreadyExistsError, type Store } from './store';
import { replaceStale } from './writer';

export interface CopyOptions {
  /** Copy only this step (it must be committed at the source). Default: every committed step. */
  step?: number;
  /** Called as bytes of a step's files are read (and passed on to the destination). */
  onProgress?: (progress: CopyProgress) => void;
}

export interface CopyProgress {
  step: number;
  file: string;
  /** Bytes of this step copied so far, out of `totalBytes` (the sizes its manifest records). */
  bytes: number;
  totalBytes: number;
}

export interface CopyResult {
  copied: Array<{ step: number; files: number; bytes: number }>;
  /** Steps left alone, with why (already committed at the destination). */
  skipped: Array<{ step: number; why: string }>;
  /** Steps whose source does not verify (size, checksum, missing file, bad manifest): not committed. */
  failed: Array<{ step: number; error: string }>;
}

export async function copyCheckpoints(
  src: Location,
  dst: Location,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const from = openStore(src);
  const to = openStore(dst);
  if (from.location === to.location) {
    throw new InvalidArgumentError(`copy: source and destination are the same location (${from.location})`, {
      field: 'dst',
    });
  }
  let steps: number[];
  if (options.step !== undefined) {
    const step = validateStep(options.step);
    if (!(await from.exists(manifestFile(step)))) {
      throw new NotCommittedError(`step ${step} is not committed in ${from.location}; nothing copied`, {
        file: manifestFile(step),
        step,
      });
    }
    steps = [step];
  } else {
    steps = await committedSteps(from);
  }
  const result: CopyResult = { copied: [], skipped: [], failed: [] };
  for (const step of steps) {
    try {
      const outcome = await copyStep(from, to, step, options.onProgress);
      if (typeof outcome === 'string') result.skipped.push({ step, why: outcome });
      else result.copied.push({ step, ...outcome });
    } catch (err) {
      // A source that fails its own checks is reported and the other steps still go; a store failure
      // (network, permissions) stops the copy.
      if (!(err instanceof CheckpointError) || err.exitCode !== 1) throw err;
      warn0(`not copying step ${step}: ${err.message}`, { step, file: err.file });
      result.failed.push({ step, error: err.message });
    }
  }
  return result;
}

/** Copies one step; returns why it was skipped, or what was copied. */
async function copyStep(
  from: Store,
  to: Store,
  step: number,
  onProgress?: (progress: CopyProgress) => void,
): Promise<{ files: number; bytes: number } | string> {
  const committedThere = `already committed in ${to.location}`;
  if (await to.exists(manifestFile(step))) return committedThere;
  // The manifest is copied byte for byte: same records, same commit time.
  const manifestBytes = await from.read(manifestFile(step));
  const manifest = parseManifest(manifestBytes, step);
  let bytes = 0;
  const totalBytes = Object.values(manifest.files).reduce((sum, r) => sum + r.bytes, 0);
  for (const [file, record] of Object.entries(manifest.files)) {
    const done = bytes;
    const report = onProgress && ((n: number) => onProgress({ step, file, bytes: done + n, totalBytes }));
    const outcome = await copyFile(from, to, step, file, record, report);
    if (outcome === 'committed') return committedThere;
    bytes += record.bytes;
  }
  try {
    await to.put(manifestFile(step), manifestBytes, { exclusive: true });
  } catch (err) {
    if (err instanceof AlreadyExistsError)
      return `committed in ${to.location} by another writer during the copy`;
    throw err;
  }
  await copyEval(from, to, step);
  log0(`copied step ${step} from ${from.location} to ${to.location}`, { step }, 'debug');
  return { files: Object.keys(manifest.files).length, bytes };
}

async function copyFile(
  from: Store,
  to: Store,
  step: number,
  file: string,
  record: FileRecord,
  report?: (bytes: number) => void,
): Promise<'ok' | 'committed'> {
  const entry = await from.stat(file);
  if (!entry) {
    throw new MissingFileError(
      `${file} is listed in ${manifestFile(step)} but missing from ${from.location}`,
      {
        file,
        step,
      },
    );
  }
  if (entry.bytes !== record.bytes) throw sizeMismatch(file, step, record.bytes, entry.bytes);
  try {
    await to.put(file, verified(from, file, step, record, report), { exclusive: true });
    return 'ok';
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
  }
  // Left by an earlier copy or save of this step that never committed (or one committing right now).
  if (await to.exists(manifestFile(step))) return 'committed';
  const existing = await digestStream(to.stream(file), checksumKinds(record));
  if (sameContent(existing, record)) return 'ok';
  if (await to.exists(manifestFile(step))) return 'committed';
  await replaceStale(
    to,
    step,
    file,
    () => to.put(file, verified(from, file, step, record, report), { exclusive: true }),
    { mayTakeLease: true },
  );
  return 'ok';
}

/**
 * The source file's bytes, hashed on the way. A mismatch throws after the last chunk, before the put that
 * consumes this can publish: the destination never holds an unverified file under its final name.
 */
async function* verified(
  from: Store,
  file: string,
  step: number,
  record: FileRecord,
  report?: (bytes: number) => void,
): AsyncIterable<Uint8Array> {
  const digest = new FileDigest(checksumKinds(record));
  for await (const chunk of from.stream(file)) {
    digest.update(chunk);
    report?.(digest.bytes);
    if (digest.bytes > record.bytes) throw sizeMismatch(file, step, record.bytes, digest.bytes);
    yield chunk;
  }
  if (digest.bytes !== record.bytes) throw sizeMismatch(file, step, record.bytes, digest.bytes);
  const mismatch = checksumMismatch(record, digest.record());
  if (mismatch) throw checksumError(file, step, mismatch);
}

/** Eval results are not in the manifest (they come after the commit); carried along when present. */
async function copyEval(from: Store, to: Store, step: number): Promise<void> {
  const name = evalFile(step);
  if (!(await from.exists(name))) return;
  try {
    await to.put(name, await from.read(name), { exclusive: true });
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
  }
}

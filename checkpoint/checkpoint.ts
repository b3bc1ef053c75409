/**
 * The low layer (nanochat's save_checkpoint / load_checkpoint), rank-aware and verified.
 *
 * Save: rank 0 writes the model tensors and the meta, every rank writes its optimizer shard, then — once
 * every rank's files are published and their checksums gathered — rank 0 writes the manifest. Until the
 * manifest exists the step does not exist, so a crash at any point leaves either the previous checkpoints
 * or a whole new one. Load: every byte read is checksummed and compared with the manifest.
 */
import { checksumKinds, checksumMismatch, digestChunks, digestStream, sameContent } from './checksum';
import {
  AlreadyCommittedError,
  IntegrityError,
  MissingFileError,
  NotCommittedError,
  WorldSizeMismatchError,
  WriterConflictError,
  FileConflictError,
} from './errors';
import {
  FORMAT,
  FORMAT_VERSION,
  type FileRecord,
  type Manifest,
  type Meta,
  parseManifest,
  parseMeta,
} from './manifest';
import { applyMigrations } from './migrations';
import { manifestFile, metaFile, modelFile, optimFile, validateRank, validateStep } from './names';
import { type Location, openStore } from './location';
import { safetensorsChunks } from './safetensors-format';
import { ChunkPool, readSafetensorsStream, tensorAlignedChunks } from './safetensors-read';
import { fromFloat32, toFloat32 } from './dtype';
import { AlreadyExistsError, type Store } from './store';
import { type Coordinator, storeCoordinator, soloCoordinator } from './coordinator';
import type { NamedTensors, Tensor } from './tensors';
import { currentWriter, fenceFromToken, mayStillWrite, replaceStale, type FenceToken } from './writer';

export interface SaveData {
  /** Model tensors: written by rank 0 only (weights are the same on every rank). */
  model?: NamedTensors;
  /** This rank's optimizer state shard (always stored as-is; keep it f32). */
  optimizer?: NamedTensors | null;
  /** JSON-serialisable metadata: config, data-loader/loop/RNG state... Written by rank 0. */
  meta: Record<string, unknown>;
}

export type SaveDtype = 'F32' | 'BF16' | 'F16';

export interface SaveOptions {
  rank?: number;
  worldSize?: number;
  /** Dtype for floating model tensors (optimizer shards are never converted). Default F32. */
  saveDtype?: SaveDtype;
  /** How ranks hand their file records to rank 0 before the commit. Default: through the store. */
  coordinator?: Coordinator;
  /** How long rank 0 waits for the other ranks' files (store coordinator). */
  commitTimeoutMs?: number;
  /**
   * The writer lease this save is made under (checkpoint/writer.ts): rank 0 checks it right before the
   * commit, and only its holder removes another writer's files. Without one, rank 0 refuses to commit into
   * a directory whose lease another writer holds, and takes the lease for a moment if it must replace a
   * stale file.
   */
  fence?: FenceToken;
}

export interface SaveResult {
  step: number;
  /** Files this rank wrote, with sizes and checksums. */
  files: Record<string, FileRecord>;
  /** True on the rank that wrote the manifest. */
  committed: boolean;
}

export async function saveCheckpoint(
  dir: Location,
  step: number,
  data: SaveData,
  options: SaveOptions = {},
): Promise<SaveResult> {
  const store = openStore(dir);
  const files = await writeCheckpointFiles(store, step, data, options);
  return commitCheckpoint(store, step, files, options);
}

/**
 * Phase 1 of a save: publish this rank's files (rank 0: model + meta; every rank: its optimizer shard)
 * and return their sizes and checksums. Nothing is visible as a checkpoint yet.
 */
export async function writeCheckpointFiles(
  dir: Location,
  step: number,
  data: SaveData,
  options: Pick<SaveOptions, 'rank' | 'worldSize' | 'saveDtype' | 'fence'> = {},
): Promise<Record<string, FileRecord>> {
  const store = openStore(dir);
  validateStep(step);
  const rank = options.rank ?? 0;
  const worldSize = options.worldSize ?? 1;
  validateRank(rank, worldSize);
  await refuseIfCommitted(store, step);
  const rights = {
    fence: options.fence ? fenceFromToken(options.fence) : undefined,
    mayTakeLease: rank === 0,
  };
  // A writer whose lease has run out writes nothing at all.
  rights.fence?.assertValid(store);
  const publish = (key: string, chunks: () => Iterable<Uint8Array>) =>
    publishFile(store, step, key, chunks, rights);

  const files: Record<string, FileRecord> = {};
  if (rank === 0) {
    if (data.model) {
      const model = convertModel(data.model, options.saveDtype ?? 'F32');
      files[modelFile(step)] = await publish(modelFile(step), () => safetensorsChunks(model).chunks);
    }
    const meta = { ...data.meta, step, world_size: worldSize, format_version: FORMAT_VERSION };
    const metaBytes = Buffer.from(JSON.stringify(meta, null, 2) + '\n');
    files[metaFile(step)] = await publish(metaFile(step), () => [metaBytes]);
  }
  if (data.optimizer) {
    const optimizer = data.optimizer;
    const name = optimFile(step, rank);
    files[name] = await publish(name, () => safetensorsChunks(optimizer).chunks);
  }
  return files;
}

/**
 * Phase 2: every rank hands its file records to rank 0 (through the coordinator), and rank 0 writes the
 * manifest — the commit — once all of them are there.
 */
export async function commitCheckpoint(
  dir: Location,
  step: number,
  files: Record<string, FileRecord>,
  options: Pick<SaveOptions, 'rank' | 'worldSize' | 'coordinator' | 'commitTimeoutMs' | 'fence'> = {},
): Promise<SaveResult> {
  const store = openStore(dir);
  const rank = options.rank ?? 0;
  const worldSize = options.worldSize ?? 1;
  const coordinator =
    options.coordinator ??
    (worldSize === 1 ? soloCoordinator() : storeCoordinator(store, options.commitTimeoutMs));
  const gathered = await coordinator.gatherFileRecords(step, rank, worldSize, files);
  if (rank !== 0 || !gathered) return { step, files, committed: false };

  const all: Record<string, FileRecord> = {};
  for (const records of gathered) Object.assign(all, records);
  const manifest: Manifest = {
    format: FORMAT,
    format_version: FORMAT_VERSION,
    step,
    world_size: worldSize,
    files: sortKeys(all),
    committed_at: new Date().toISOString(),
    ...(options.fence ? { writer_epoch: options.fence.epoch } : {}),
  };
  if (options.fence) {
    // After an earlier writer's removals, the files must still hold what this save wrote.
    await fenceFromToken(options.fence).beforeCommit(store, () => recheckFiles(store, step, all));
  } else {
    const writer = await currentWriter(store);
    if (writer && mayStillWrite(writer)) {
      throw new WriterConflictError(
        `${store.location} is being written by ${writer.holder} (writer epoch ${writer.epoch}); this save, ` +
          `made without its lease, does not commit step ${step}`,
        { file: manifestFile(step), step, field: 'dir' },
      );
    }
  }
  // The time of the commit itself (after any wait above): what an audit compares with lease expiries.
  manifest.committed_at = new Date().toISOString();
  try {
    await store.put(manifestFile(step), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'), {
      exclusive: true,
    });
  } catch (err) {
    if (err instanceof AlreadyExistsError) throw alreadyCommitted(store, step);
    throw err;
  }
  await coordinator.afterCommit?.(step, worldSize);
  return { step, files, committed: true };
}

async function recheckFiles(store: Store, step: number, files: Record<string, FileRecord>): Promise<void> {
  for (const [name, record] of Object.entries(files)) {
    const now = await digestStream(store.stream(name), checksumKinds(record)).catch(() => null);
    if (!now || !sameContent(now, record)) {
      throw new FileConflictError(
        `${name} in ${store.location} changed while an earlier writer removed files; step ${step} is not committed`,
        { file: name, step },
      );
    }
  }
}

function alreadyCommitted(store: Store, step: number): AlreadyCommittedError {
  return new AlreadyCommittedError(
    `step ${step} is already committed in ${store.location} (${manifestFile(step)} exists); nothing was written`,
    { file: manifestFile(step), step },
  );
}

export async function refuseIfCommitted(store: Store, step: number): Promise<void> {
  if (await store.exists(manifestFile(step))) throw alreadyCommitted(store, step);
}

/**
 * Publish one file with no-replace semantics. A file already under the name, while the step has no
 * manifest, is left over from an earlier attempt or written by another writer: identical bytes are kept as
 * they are; other bytes are removed only under the writer lease (writer.ts: replaceStale). A committed
 * step is never touched.
 */
export async function publishFile(
  store: Store,
  step: number,
  key: string,
  chunks: () => Iterable<Uint8Array>,
  rights: Parameters<typeof replaceStale>[4],
): Promise<FileRecord> {
  try {
    return await store.put(key, chunks(), { exclusive: true });
  } catch (err) {
    if (!(err instanceof AlreadyExistsError)) throw err;
  }
  await refuseIfCommitted(store, step);
  const ours = digestChunks(chunks());
  const existing = await digestStream(store.stream(key));
  if (sameContent(existing, ours)) return ours;
  return replaceStale(store, step, key, () => store.put(key, chunks(), { exclusive: true }), rights);
}

function convertModel(model: NamedTensors, dtype: SaveDtype): NamedTensors {
  if (dtype === 'F32') return model;
  const out: NamedTensors = {};
  for (const [name, t] of Object.entries(model)) {
    out[name] = isFloat(t) ? fromFloat32(toFloat32(t), t.shape, dtype) : t;
  }
  return out;
}

function isFloat(t: Tensor): boolean {
  return t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16' || t.dtype === 'F64';
}

function sortKeys<T>(obj: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export interface LoadOptions {
  rank?: number;
  /** When given, must equal the saved world size (else WorldSizeMismatchError). */
  worldSize?: number;
  loadModel?: boolean;
  loadOptimizer?: boolean;
  /** Check every byte against the manifest's checksum (crc32 or sha256; default true). */
  verify?: boolean;
  /** Convert BF16/F16/F64 model tensors to F32 for the compute backend (default true). */
  toFloat32?: boolean;
  /** Apply the registered migrations to meta and model tensors (default true). */
  migrate?: boolean;
  /** Receive model tensors one by one instead of collecting them (they are then not in `model`). */
  onModelTensor?: (name: string, tensor: Tensor) => void | Promise<void>;
  /**
   * onModelTensor copies what it keeps before it returns (e.g. into a wasm heap): a tensor's storage is then
   * reused for later tensors of the same size, so the load leaves no per-tensor garbage behind. Default
   * false: the tensors handed out are the caller's to keep.
   */
  transientModelTensors?: boolean;
}

export interface LoadedCheckpoint {
  step: number;
  meta: Meta;
  manifest: Manifest;
  model: NamedTensors | null;
  optimizer: NamedTensors | null;
  /** Ids of the migrations applied while loading. */
  migrations: string[];
}

export async function readManifest(dir: Location, step: number): Promise<Manifest> {
  const store = openStore(dir);
  validateStep(step);
  const entry = await store.stat(manifestFile(step));
  if (!entry) {
    throw new NotCommittedError(
      `step ${step} in ${store.location} is not committed: ${manifestFile(step)} does not exist`,
      { file: manifestFile(step), step },
    );
  }
  return parseManifest(await store.read(manifestFile(step)), step);
}

export async function loadCheckpoint(
  dir: Location,
  step: number,
  options: LoadOptions = {},
): Promise<LoadedCheckpoint> {
  const store = openStore(dir);
  const manifest = await readManifest(store, step);
  const rank = options.rank ?? 0;
  const verify = options.verify ?? true;
  if (options.worldSize !== undefined && options.worldSize !== manifest.world_size) {
    throw new WorldSizeMismatchError(manifest.world_size, options.worldSize, {
      file: manifestFile(step),
      step,
    });
  }
  validateRank(rank, options.worldSize ?? manifest.world_size);

  const metaBytes = await readVerified(store, manifest, metaFile(step), verify);
  let meta = parseMeta(metaBytes, step);

  let model: NamedTensors | null = null;
  const wantModel = options.loadModel ?? true;
  if (wantModel && manifest.files[modelFile(step)]) {
    const collected: NamedTensors = {};
    const convert = options.toFloat32 ?? true;
    const transient = !!options.onModelTensor && !!options.transientModelTensors;
    await readTensors(
      store,
      manifest,
      modelFile(step),
      verify,
      async (name, t) => {
        const tensor =
          convert && isFloat(t) && t.dtype !== 'F32'
            ? { dtype: 'F32' as const, shape: t.shape, data: toFloat32(t) }
            : t;
        if (options.onModelTensor) await options.onModelTensor(name, tensor);
        else collected[name] = tensor;
      },
      transient,
    );
    model = options.onModelTensor ? null : collected;
  }

  let optimizer: NamedTensors | null = null;
  if (options.loadOptimizer ?? true) {
    const name = optimFile(step, rank);
    if (manifest.files[name]) {
      const collected: NamedTensors = {};
      await readTensors(store, manifest, name, verify, (n, t) => {
        collected[n] = t;
      });
      optimizer = collected;
    } else if (Object.keys(manifest.files).some((f) => f.startsWith('optim_'))) {
      throw new MissingFileError(
        `${name} is not in ${manifestFile(step)}: the checkpoint was saved with world size ${manifest.world_size}` +
          ` and has no optimizer shard for rank ${rank}`,
        { file: name, step },
      );
    }
  }

  let migrations: string[] = [];
  if (options.migrate ?? true) {
    const result = applyMigrations(meta, model);
    meta = result.meta;
    migrations = result.applied;
  }
  return { step, meta, manifest, model, optimizer, migrations };
}

async function readVerified(
  store: Store,
  manifest: Manifest,
  name: string,
  verify: boolean,
): Promise<Buffer> {
  const record = manifest.files[name]!;
  const bytes = await readOrMissing(store, manifest.step, name);
  if (verify) {
    if (bytes.length !== record.bytes) throw sizeMismatch(name, manifest.step, record.bytes, bytes.length);
    const mismatch = checksumMismatch(record, digestChunks([bytes], checksumKinds(record)));
    if (mismatch) throw checksumError(name, manifest.step, mismatch);
  }
  return bytes;
}

async function readOrMissing(store: Store, step: number, name: string): Promise<Buffer> {
  if (!(await store.exists(name))) {
    throw new MissingFileError(
      `${name} is listed in ${manifestFile(step)} but missing from ${store.location}`,
      {
        file: name,
        step,
      },
    );
  }
  return store.read(name);
}

async function readTensors(
  store: Store,
  manifest: Manifest,
  name: string,
  verify: boolean,
  onTensor: (name: string, t: Tensor) => void | Promise<void>,
  transient = false,
): Promise<void> {
  const record = manifest.files[name]!;
  const entry = await store.stat(name);
  if (!entry) {
    throw new MissingFileError(
      `${name} is listed in ${manifestFile(manifest.step)} but missing from ${store.location}`,
      {
        file: name,
        step: manifest.step,
      },
    );
  }
  if (verify && entry.bytes !== record.bytes)
    throw sizeMismatch(name, manifest.step, record.bytes, entry.bytes);
  // A store that reads into our buffers (local files) hands each big tensor over without a copy.
  const reader = await store.openReader?.(name);
  const pool = reader && transient ? new ChunkPool() : undefined;
  try {
    await readSafetensorsStream(
      reader ? tensorAlignedChunks(reader, entry.bytes, name, pool) : store.stream(name),
      entry.bytes,
      {
        file: name,
        expectedSha256: verify ? record.sha256 : undefined,
        expectedCrc32: verify ? record.crc32 : undefined,
        sha256: verify && record.sha256 !== undefined,
        adoptChunks: reader !== undefined,
        release: pool && ((chunk) => pool.give(chunk)),
        onTensor,
      },
    );
  } finally {
    await reader?.close();
  }
}

export function sizeMismatch(file: string, step: number, expected: number, actual: number): IntegrityError {
  return new IntegrityError(`${file}: size is ${actual} bytes, the manifest says ${expected}`, {
    file,
    step,
    expected,
    actual,
  });
}

export function checksumError(
  file: string,
  step: number,
  { kind, expected, actual }: NonNullable<ReturnType<typeof checksumMismatch>>,
): IntegrityError {
  return new IntegrityError(`${file}: ${kind} ${actual} does not match the manifest (${expected})`, {
    file,
    step,
    field: kind,
    expected,
    actual,
  });
}

/**
 * `ckpt commit`: publish files a program wrote itself (a command program in any language) as a checkpoint,
 * by the same protocol as a save. Every file is checked first (names, safetensors layout, meta), so a
 * refusal publishes nothing; then the files are published with no-replace semantics, hashed, and rank 0
 * writes the manifest last, under the writer's fence. With W ranks each rank commits its own files and
 * rank 0 commits once every rank's are there (the store coordinator, as for a library save).
 */
import { createReadStream } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { digestChunks, digestStream, sameContent, checksumKinds } from './checksum';
import {
  commitCheckpoint,
  publishFile,
  readManifest,
  refuseIfCommitted,
  type SaveResult,
} from './checkpoint';
import { storeCoordinator, soloCoordinator, type Coordinator } from './coordinator';
import { CheckpointError, CommitRefusedError, InvalidArgumentError } from './errors';
import { openStore, type Location } from './location';
import { FORMAT_VERSION, type FileRecord } from './manifest';
import {
  manifestFile,
  metaFile,
  modelFile,
  optimFile,
  padStep,
  parseFileName,
  validateRank,
  validateStep,
} from './names';
import { MAX_HEADER_BYTES, parseSafetensorsHeader } from './safetensors-format';
import type { Store } from './store';
import { fenceFromToken, type FenceToken } from './writer';

export interface CommitFilesOptions {
  /** This rank (with worldSize): commit only its files. Absent: commit the whole step's files at once. */
  rank?: number;
  worldSize?: number;
  /** A local staging directory holding the files; absent: they are already in the checkpoint directory. */
  from?: string;
  /** The program recorded in meta (`{ name, version }`; version from meta's `program_version`, default 1). */
  program: string;
  /** The writer lease the commit is made under (rank 0). */
  fence?: FenceToken | (() => Promise<FenceToken>);
  commitTimeoutMs?: number;
}

export interface CommitFilesResult extends SaveResult {
  /** Bytes published by this call. */
  bytes: number;
}

/** Where the files come from: a local staging directory, or the checkpoint directory itself. */
interface Source {
  describe: string;
  names(): Promise<string[]>;
  size(name: string): Promise<number>;
  head(name: string, length: number): Promise<Buffer>;
  read(name: string): Promise<Buffer>;
  chunks(name: string): AsyncIterable<Uint8Array>;
}

function stagingSource(dir: string): Source {
  return {
    describe: dir,
    async names() {
      const entries = await readdir(dir, { withFileTypes: true });
      for (const e of entries) {
        if (!e.isFile()) {
          throw refused(
            `${join(dir, e.name)} is not a regular file (${e.isSymbolicLink() ? 'a symbolic link' : 'a directory or special file'}); ` +
              'a staging directory holds the step’s files only',
            e.name,
          );
        }
      }
      return entries.map((e) => e.name);
    },
    async size(name) {
      return (await lstat(join(dir, name))).size;
    },
    async head(name, length) {
      const fh = await open(join(dir, name), 'r');
      try {
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fh.read(buf, 0, length, 0);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    },
    async read(name) {
      const fh = await open(join(dir, name), 'r');
      try {
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    },
    chunks: (name) => createReadStream(join(dir, name), { highWaterMark: 4 << 20 }),
  };
}

function storeSource(store: Store, step: number): Source {
  return {
    describe: store.location,
    async names() {
      return (await store.list())
        .map((e) => e.key)
        .filter((k) => {
          const p = parseFileName(k);
          return p?.step === step && ['model', 'optim', 'meta', 'extra'].includes(p.kind);
        });
    },
    async size(name) {
      return (await store.stat(name))?.bytes ?? 0;
    },
    head: (name, length) => store.readRange(name, 0, length),
    read: (name) => store.read(name),
    chunks: (name) => store.stream(name),
  };
}

function refused(message: string, file?: string, step?: number): CommitRefusedError {
  return new CommitRefusedError(message, { file, step });
}

/** The files this call commits, checked against the contract's names. */
function planFiles(names: string[], step: number, ranks: number[], whole: boolean, where: string): string[] {
  const out: string[] = [];
  for (const name of names) {
    const p = parseFileName(name);
    const ours =
      p !== null &&
      p.step === step &&
      (p.kind === 'optim'
        ? ranks.includes(p.rank!)
        : ['model', 'meta', 'extra'].includes(p.kind) && ranks.includes(0));
    if (!ours) {
      const expected =
        `${modelFile(step)}, ${optimFile(step, ranks[0]!)}${whole && ranks.length > 1 ? ' (one per rank)' : ''}, ` +
        `${metaFile(step)} or extra_${padStep(step)}_<name>`;
      throw refused(
        `${where}: ${JSON.stringify(name)} is not a file this commit publishes (expected ${expected}); nothing was published`,
        name,
        step,
      );
    }
    out.push(name);
  }
  return out.sort();
}

async function checkSafetensors(source: Source, name: string, step: number): Promise<void> {
  const size = await source.size(name);
  const where = `${source.describe}/${name}`;
  if (size < 8) throw refused(`${where}: ${size} bytes, too short for safetensors`, name, step);
  const lengthBytes = await source.head(name, 8);
  const headerLength = Number(lengthBytes.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > size) {
    throw refused(
      `${where}: not a valid safetensors file: its header of ${headerLength} bytes does not fit a ${size}-byte file`,
      name,
      step,
    );
  }
  const head = await source.head(name, 8 + headerLength);
  try {
    parseSafetensorsHeader(head.subarray(8), size, name);
  } catch (err) {
    throw refused(`${where}: not a valid safetensors file: ${(err as Error).message}`, name, step);
  }
}

/** The meta as the checkpoint records it: the program's keys, checked, plus the contract's. */
async function checkedMeta(
  source: Source,
  step: number,
  worldSize: number,
  program: string,
): Promise<Buffer> {
  const name = metaFile(step);
  const where = `${source.describe}/${name}`;
  let meta: unknown;
  try {
    meta = JSON.parse((await source.read(name)).toString('utf8'));
  } catch (err) {
    throw refused(`${where}: not valid JSON (${(err as Error).message})`, name, step);
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta))
    throw refused(`${where}: must be a JSON object`, name, step);
  const m = meta as Record<string, unknown>;
  if (m.step !== step)
    throw refused(`${where}: "step" must be ${step}, got ${JSON.stringify(m.step)}`, name, step);
  if (m.config === null || typeof m.config !== 'object' || Array.isArray(m.config))
    throw refused(`${where}: "config" must be an object (the program's config)`, name, step);
  if (m.world_size !== undefined && m.world_size !== worldSize)
    throw refused(
      `${where}: "world_size" is ${JSON.stringify(m.world_size)}, committed with ${worldSize}`,
      name,
      step,
    );
  const version = m.program_version ?? 1;
  if (!Number.isSafeInteger(version) || (version as number) < 1)
    throw refused(`${where}: "program_version" must be an integer >= 1`, name, step);
  const recorded = m.program as { name?: unknown } | undefined;
  if (recorded !== undefined && (typeof recorded !== 'object' || recorded?.name !== program)) {
    throw refused(
      `${where}: "program" names ${JSON.stringify(recorded)}, committed as program "${program}"`,
      name,
      step,
    );
  }
  const out = {
    ...m,
    program: { name: program, version },
    step,
    world_size: worldSize,
    format_version: FORMAT_VERSION,
  };
  return Buffer.from(JSON.stringify(out, null, 2) + '\n');
}

/** The optimizer files must be all there or all absent: a mix means a rank's file is missing. */
function checkRankFiles(gathered: Array<Record<string, FileRecord>>, step: number): void {
  const has = gathered.map((files, r) => optimFile(step, r) in files);
  if (has.some(Boolean) && !has.every(Boolean)) {
    const missing = has.flatMap((h, r) => (h ? [] : [optimFile(step, r)]));
    throw refused(
      `step ${step}: ${missing.join(', ')} missing while other ranks have their optimizer files; not committed`,
      missing[0],
      step,
    );
  }
}

/**
 * Validate, publish and commit the files of `step` (this rank's, or the whole step's). Throws
 * CommitRefusedError (exit 2) before publishing anything when a file breaks the contract.
 */
export async function commitFiles(
  dir: Location,
  step: number,
  options: CommitFilesOptions,
): Promise<CommitFilesResult> {
  validateStep(step);
  const whole = options.rank === undefined;
  const worldSize = options.worldSize ?? 1;
  const rank = options.rank ?? 0;
  validateRank(rank, worldSize);
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(options.program)) {
    throw new InvalidArgumentError(
      `program name ${JSON.stringify(options.program)} is not a short identifier`,
      {
        field: 'program',
      },
    );
  }
  const store = openStore(dir);
  // Another rank's commit of a step rank 0 has committed already: done when the checkpoint holds exactly
  // this rank's bytes (a group that replays the same step after a crash), refused otherwise.
  if (!whole && rank > 0 && (await store.exists(manifestFile(step)))) {
    const source = options.from !== undefined ? stagingSource(options.from) : storeSource(store, step);
    const mine = planFiles(await source.names(), step, [rank], false, source.describe);
    const manifest = await readManifest(store, step);
    const files: Record<string, FileRecord> = {};
    for (const name of mine) {
      const committed = manifest.files[name];
      const record = digestChunks(
        [await source.read(name)],
        committed ? checksumKinds(committed) : undefined,
      );
      if (!committed || !sameContent(committed, record)) await refuseIfCommitted(store, step);
      files[name] = record;
    }
    return { step, files, committed: false, bytes: 0 };
  }
  await refuseIfCommitted(store, step);
  const source = options.from !== undefined ? stagingSource(options.from) : storeSource(store, step);
  const ranks = whole ? Array.from({ length: worldSize }, (_, r) => r) : [rank];
  const names = planFiles(
    await source.names().catch(notFound(source, step)),
    step,
    ranks,
    whole,
    source.describe,
  );

  // Check everything before publishing anything.
  const lead = ranks.includes(0);
  if (lead) {
    for (const required of [modelFile(step), metaFile(step)]) {
      if (!names.includes(required))
        throw refused(`${source.describe}: ${required} is missing; nothing was published`, required, step);
    }
  }
  if (whole) {
    checkRankFiles(
      ranks.map((r) => (names.includes(optimFile(step, r)) ? { [optimFile(step, r)]: { bytes: 0 } } : {})),
      step,
    );
  }
  for (const name of names) if (name.endsWith('.safetensors')) await checkSafetensors(source, name, step);
  const meta = lead ? await checkedMeta(source, step, worldSize, options.program) : undefined;

  const fence = typeof options.fence === 'function' ? await options.fence() : options.fence;
  const rights = { fence: fence ? fenceFromToken(fence) : undefined, mayTakeLease: rank === 0 };
  rights.fence?.assertValid(store);
  const files: Record<string, FileRecord> = {};
  let bytes = 0;
  for (const name of names) {
    const record =
      name === metaFile(step)
        ? await publishFile(store, step, name, () => [meta!], rights)
        : await publishStream(store, step, name, source, rights);
    files[name] = record;
    bytes += record.bytes;
  }
  // The fence is read again right before the commit: the holder renews it while the files upload.
  const commitFence = typeof options.fence === 'function' && rank === 0 ? await options.fence() : fence;
  // A whole-step commit holds every rank's files already; otherwise rank 0 gathers the others' records.
  const coordinator: Coordinator =
    whole || worldSize === 1
      ? soloCoordinator()
      : checkingCoordinator(storeCoordinator(store, options.commitTimeoutMs), step);
  const result = await commitCheckpoint(store, step, files, {
    rank,
    worldSize,
    coordinator,
    ...(commitFence ? { fence: commitFence } : {}),
  });
  return { ...result, bytes };
}

/** Rank 0 refuses to commit when some ranks published optimizer files and others did not. */
function checkingCoordinator(inner: Coordinator, step: number): Coordinator {
  return {
    async gatherFileRecords(s, rank, worldSize, files) {
      const gathered = await inner.gatherFileRecords(s, rank, worldSize, files);
      if (gathered) checkRankFiles(gathered, step);
      return gathered;
    },
    afterCommit: inner.afterCommit?.bind(inner),
  };
}

/** Publish a file from the source (no-replace; identical bytes already there are kept). */
async function publishStream(
  store: Store,
  step: number,
  name: string,
  source: Source,
  rights: Parameters<typeof publishFile>[4],
): Promise<FileRecord> {
  if (source.describe === store.location) {
    // Already in place: checksum it where it is.
    return digestStream(store.stream(name));
  }
  const data = await source.read(name);
  return publishFile(store, step, name, () => [data], rights);
}

function notFound(source: Source, step: number) {
  return (err: unknown): never => {
    if (err instanceof CheckpointError) throw err;
    throw refused(
      `${source.describe}: cannot list the files of step ${step} (${(err as Error).message})`,
      undefined,
      step,
    );
  };
}

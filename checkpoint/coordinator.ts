/**
 * How the ranks of one save meet before the commit. Rank 0 may write the manifest only once every rank's
 * files are published, and it needs their sizes and checksums to do so. A process group (collectives over
 * the network) implements `gatherFileRecords` with a gather; without one, ranks meet through the store:
 * each rank publishes a small "done" record and rank 0 waits for all of them.
 */
import { CommitTimeoutError, SchemaError } from './errors';
import type { FileRecord } from './manifest';
import { padStep } from './names';
import type { Store } from './store';

export interface Coordinator {
  /** Every rank calls this; rank 0 receives every rank's records (index = rank), the others null. */
  gatherFileRecords(
    step: number,
    rank: number,
    worldSize: number,
    files: Record<string, FileRecord>,
  ): Promise<Array<Record<string, FileRecord>> | null>;
  /** Called on rank 0 after the manifest is written (clean-up). */
  afterCommit?(step: number, worldSize: number): Promise<void>;
}

export function soloCoordinator(): Coordinator {
  return { gatherFileRecords: async (_step, _rank, _world, files) => [files] };
}

export function rankDoneFile(step: number, rank: number): string {
  return `.rank-done_${padStep(step)}_rank${rank}.json`;
}

interface DoneRecord {
  rank: number;
  files: Record<string, FileRecord & { mtimeMs: number }>;
}

export function storeCoordinator(store: Store, timeoutMs = 10 * 60_000, pollMs = 50): Coordinator {
  return {
    async gatherFileRecords(step, rank, worldSize, files) {
      if (rank !== 0) {
        // The mtime ties the record to this attempt's file: a record left by a crashed attempt whose file
        // was since rewritten no longer matches, and rank 0 keeps waiting instead of committing it.
        const withTimes: DoneRecord['files'] = {};
        for (const [name, rec] of Object.entries(files)) {
          const st = await store.stat(name);
          withTimes[name] = { ...rec, mtimeMs: st?.mtimeMs ?? 0 };
        }
        const done: DoneRecord = { rank, files: withTimes };
        await store.put(rankDoneFile(step, rank), Buffer.from(JSON.stringify(done)));
        return null;
      }
      const out: Array<Record<string, FileRecord>> = [files];
      const deadline = Date.now() + timeoutMs;
      for (let r = 1; r < worldSize; r++) {
        for (;;) {
          const records = await readDone(store, step, r);
          if (records) {
            out[r] = records;
            break;
          }
          if (Date.now() > deadline) {
            throw new CommitTimeoutError(
              `step ${step}: rank ${r} of ${worldSize} did not finish writing its files within ${timeoutMs} ms; not committed`,
              { file: rankDoneFile(step, r), step },
            );
          }
          await new Promise((res) => setTimeout(res, pollMs));
        }
      }
      return out;
    },
    async afterCommit(step, worldSize) {
      for (let r = 1; r < worldSize; r++) await store.delete(rankDoneFile(step, r));
    },
  };
}

async function readDone(
  store: Store,
  step: number,
  rank: number,
): Promise<Record<string, FileRecord> | null> {
  const key = rankDoneFile(step, rank);
  if (!(await store.exists(key))) return null;
  let done: DoneRecord;
  try {
    done = JSON.parse((await store.read(key)).toString('utf8')) as DoneRecord;
  } catch (err) {
    throw new SchemaError(`${key}: not valid JSON`, { file: key, step, cause: err });
  }
  const out: Record<string, FileRecord> = {};
  for (const [name, rec] of Object.entries(done.files ?? {})) {
    const st = await store.stat(name);
    if (!st || st.bytes !== rec.bytes || st.mtimeMs !== rec.mtimeMs) return null;
    out[name] = {
      bytes: rec.bytes,
      ...(rec.crc32 && { crc32: rec.crc32 }),
      ...(rec.sha256 && { sha256: rec.sha256 }),
    };
  }
  return out;
}

/**
 * Writer leases: at most one writer of a checkpoint directory can commit, and no writer ever changes a
 * file another writer published.
 *
 * - A writer takes the directory by creating `writer_<epoch>.json` exclusively, with the next epoch (the
 *   fencing token). The highest epoch is the one writer that may commit; a lower one is fenced.
 * - The record has an expiry. The holder renews it while it may go on (a pipeline's training renews only
 *   while the Temporal server confirms that its activity attempt is the current one), and never extends a
 *   lease that has already run out. An expired or released lease is free to take.
 * - Published files are never replaced in place. A file of an uncommitted step with other bytes is removed
 *   only by the holder, and only once every earlier epoch can no longer write (released, or expired by
 *   more than the clock allowance): then nothing that an earlier writer could still commit is touched.
 * - Before the manifest (the commit) the holder checks that its lease is still valid on its own clock and
 *   that its epoch is still the highest. A writer that has been taken over, or whose lease ran out, stops.
 *
 * docs/storage.md gives the argument, and what it assumes of the store and of clocks.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  CheckpointError,
  FileConflictError,
  InvalidArgumentError,
  WriterConflictError,
  WriterFencedError,
  WriterLeaseExpiredError,
  AlreadyCommittedError,
} from './errors';
import { openStore, type Location } from './location';
import { log0, warn0 } from './log';
import { manifestFile, metaFile, padStep, parseFileName } from './names';
import { AlreadyExistsError, type PutResult, type Store } from './store';

/** How long a writer lease lasts without renewal (CKPT_WRITER_TTL_MS overrides it). */
export const DEFAULT_WRITER_TTL_MS = 30_000;
export const WRITER_TTL_ENV = 'CKPT_WRITER_TTL_MS';
/**
 * How far apart two hosts' clocks may be (CKPT_CLOCK_SKEW_MS overrides it). A lease counts as expired for
 * another writer only this long after its recorded expiry; the holder itself stops at the expiry.
 */
export const DEFAULT_CLOCK_SKEW_MS = 2_000;
export const CLOCK_SKEW_ENV = 'CKPT_CLOCK_SKEW_MS';

const WRITER_RE = /^writer_(\d{6,})\.json$/;
const REMOVING_RE = /^writer_(\d{6,})\.removing$/;

export function writerKey(epoch: number): string {
  return `writer_${padStep(epoch)}.json`;
}

/**
 * Present while the writer of `epoch` removes files another writer published (WriterFence.removing): a
 * later writer that finds it before its commit waits for that writer to stop, then re-checks its files.
 */
export function removingKey(epoch: number): string {
  return `writer_${padStep(epoch)}.removing`;
}

/** The epoch of a writer record's file name, or null when the name is not one. */
export function writerEpoch(name: string): number | null {
  const m = WRITER_RE.exec(name);
  return m ? Number(m[1]) : null;
}

function msFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) {
    throw new InvalidArgumentError(`${name} must be a whole number of milliseconds >= ${min}, got "${raw}"`, {
      field: name,
    });
  }
  return n;
}

export function writerTtlMs(env: NodeJS.ProcessEnv = process.env): number {
  return msFromEnv(env, WRITER_TTL_ENV, DEFAULT_WRITER_TTL_MS, 1000);
}

export function clockSkewMs(env: NodeJS.ProcessEnv = process.env): number {
  return msFromEnv(env, CLOCK_SKEW_ENV, DEFAULT_CLOCK_SKEW_MS, 0);
}

export interface WriterRecord {
  epoch: number;
  /** Random: tells this writer's record from another one of the same epoch (a non-atomic server). */
  id: string;
  /** Who writes, for people: host, process, pipeline. */
  holder: string;
  /** The pipeline (workflow id) the writer trains for; its retries may take the lease over at once. */
  claim: string | null;
  ttl_ms: number;
  acquired_at: string;
  expires_at: string;
  released: boolean;
}

/** What a fence needs across a thread boundary: the epoch, and the validity shared with the holder. */
export interface FenceToken {
  epoch: number;
  id: string;
  ttlMs: number;
  /** One float64: the time (ms since the Unix epoch) until which the lease is valid. Shared memory. */
  validity: SharedArrayBuffer;
}

/** When a writer recorded in `record` can no longer write, as another host sees it (ms since the epoch). */
function stopsBy(record: WriterRecord): number {
  if (record.released) return Date.parse(record.expires_at);
  return Date.parse(record.expires_at) + clockSkewMs();
}

/** Whether the writer of `record` may still be writing now. */
export function mayStillWrite(record: WriterRecord, now = Date.now()): boolean {
  return !record.released && stopsBy(record) > now;
}

function encode(record: WriterRecord): Buffer {
  return Buffer.from(JSON.stringify(record, null, 2) + '\n');
}

/** Writer epochs recorded in the directory, ascending. */
export async function writerEpochs(store: Store): Promise<number[]> {
  return (await writerListing(store)).epochs;
}

interface WriterListing {
  /** Epochs with a record, ascending. */
  epochs: number[];
  /** Epochs whose writer announced that it removes files, ascending. */
  removing: number[];
}

async function writerListing(store: Store): Promise<WriterListing> {
  const epochs: number[] = [];
  const removing: number[] = [];
  for (const entry of await store.list()) {
    const epoch = writerEpoch(entry.key);
    if (epoch !== null) epochs.push(epoch);
    const m = REMOVING_RE.exec(entry.key);
    if (m) removing.push(Number(m[1]));
  }
  const up = (x: number, y: number) => x - y;
  return { epochs: epochs.sort(up), removing: removing.sort(up) };
}

/**
 * The record of `epoch`; null when it is gone. A record that cannot be parsed counts as a writer that may
 * write until a full default lease after the file's last change.
 */
export async function readWriter(store: Store, epoch: number): Promise<WriterRecord | null> {
  const key = writerKey(epoch);
  let bytes: Buffer;
  try {
    bytes = await store.read(key);
  } catch (err) {
    if (!(await store.exists(key))) return null;
    throw err;
  }
  try {
    const r = JSON.parse(bytes.toString('utf8')) as WriterRecord;
    if (r.epoch === epoch && typeof r.id === 'string' && !Number.isNaN(Date.parse(r.expires_at))) return r;
  } catch {
    // below
  }
  const entry = await store.stat(key);
  const until = (entry?.mtimeMs ?? Date.now()) + DEFAULT_WRITER_TTL_MS;
  return {
    epoch,
    id: '',
    holder: `an unreadable record (${key})`,
    claim: null,
    ttl_ms: DEFAULT_WRITER_TTL_MS,
    acquired_at: new Date(until - DEFAULT_WRITER_TTL_MS).toISOString(),
    expires_at: new Date(until).toISOString(),
    released: false,
  };
}

/** The writer with the highest epoch, or null when the directory has none. */
export async function currentWriter(store: Store): Promise<WriterRecord | null> {
  const top = (await writerEpochs(store)).at(-1);
  return top === undefined ? null : readWriter(store, top);
}

function describeWriter(r: WriterRecord): string {
  return `${r.holder} (writer epoch ${r.epoch}${r.claim ? `, pipeline ${r.claim}` : ''})`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Kinds of files a save writes for a step before its manifest. */
const STEP_DATA = new Set(['model', 'optim', 'meta', 'extra', 'rank-done']);

/**
 * The writer's right to write, as any thread of the writer's process sees it: the epoch and the lease's
 * validity (shared memory, updated by the holder's renewals).
 */
export class WriterFence {
  private readonly valid: Float64Array;
  /** Earlier epochs known to have stopped for good. */
  private readonly settled = new Set<number>();

  constructor(readonly token: FenceToken) {
    this.valid = new Float64Array(token.validity);
  }

  get epoch(): number {
    return this.token.epoch;
  }

  validUntil(): number {
    return this.valid[0]!;
  }

  protected setValidUntil(ms: number): void {
    this.valid[0] = ms;
  }

  /** Throws WriterLeaseExpiredError unless the lease is valid for at least `marginMs` more. */
  assertValid(store: Store, marginMs = 0): void {
    const left = this.validUntil() - Date.now();
    if (left > marginMs) return;
    throw new WriterLeaseExpiredError(
      left > 0
        ? `the writer lease of ${store.location} (epoch ${this.epoch}) ends in ${Math.round(left)} ms, too soon to start this write`
        : `the writer lease of ${store.location} (epoch ${this.epoch}) expired ${new Date(this.validUntil()).toISOString()} ` +
            '(it could not be renewed: cut off from the Temporal server or the store?); stopping without committing',
      { file: writerKey(this.epoch), field: 'lease' },
    );
  }

  /** Throws WriterFencedError unless this writer's epoch is still the highest, with this writer's record. */
  async assertCurrent(store: Store): Promise<void> {
    await this.currentListing(store);
  }

  private async currentListing(store: Store): Promise<WriterListing> {
    const listing = await writerListing(store);
    const top = listing.epochs.at(-1);
    if (top === this.epoch) {
      const record = await readWriter(store, top);
      if (record?.id === this.token.id) return listing;
      throw new WriterFencedError(
        `another writer, ${record ? describeWriter(record) : 'unknown'}, holds ${store.location} with this writer's ` +
          `epoch ${this.epoch}; stopping without committing`,
        { file: writerKey(this.epoch), field: 'lease' },
      );
    }
    if (top !== undefined && top > this.epoch) {
      const record = await readWriter(store, top);
      throw new WriterFencedError(
        `${store.location} was taken over by ${record ? describeWriter(record) : `writer epoch ${top}`}; this ` +
          `writer (epoch ${this.epoch}) stops without committing`,
        { file: writerKey(top), field: 'lease' },
      );
    }
    throw new WriterFencedError(
      `this writer's lease record ${writerKey(this.epoch)} is gone from ${store.location}; stopping without committing`,
      { file: writerKey(this.epoch), field: 'lease' },
    );
  }

  /**
   * Right before a commit: the lease is valid and this writer's epoch is the highest. When an earlier
   * writer announced that it removes files (removingKey), wait until it can no longer write, then run
   * `recheck` (the caller checks that its files still hold its bytes) before committing.
   */
  async beforeCommit(store: Store, recheck?: () => Promise<void>): Promise<void> {
    this.assertValid(store);
    const { removing } = await this.currentListing(store);
    const earlier = removing.filter((e) => e < this.epoch);
    if (earlier.length > 0) {
      for (const epoch of earlier) await this.awaitEpoch(store, epoch, 'committing');
      await recheck?.();
      await this.assertCurrent(store);
    }
    this.assertValid(store);
  }

  /**
   * Remove files another writer published: announced first (removingKey), then done only while this
   * writer still holds the highest epoch with a quarter of its lease left. A writer that took over
   * meanwhile either finds the announcement before its commit (and waits, then re-checks its files), or
   * is found here, and nothing is removed.
   */
  async removing<T>(store: Store, remove: () => Promise<T>): Promise<T> {
    await store.put(removingKey(this.epoch), Buffer.from(`${this.token.id}\n`));
    try {
      await this.assertCurrent(store);
      this.assertValid(store, this.token.ttlMs / 4);
      return await remove();
    } finally {
      await store.delete(removingKey(this.epoch)).catch(() => undefined);
    }
  }

  /**
   * Wait until every writer with a lower epoch can no longer write: released, or expired beyond the clock
   * allowance. Only then may this writer remove files an earlier writer published.
   */
  async awaitPredecessors(store: Store, why: string): Promise<void> {
    const earlier = (await writerEpochs(store)).filter((e) => e < this.epoch && !this.settled.has(e));
    for (const epoch of earlier.reverse()) await this.awaitEpoch(store, epoch, why);
  }

  private async awaitEpoch(store: Store, epoch: number, why: string): Promise<void> {
    if (this.settled.has(epoch)) return;
    let told = false;
    for (;;) {
      const record = await readWriter(store, epoch);
      const wait = record ? stopsBy(record) - Date.now() : 0;
      if (!record || !mayStillWrite(record)) {
        this.settled.add(epoch);
        return;
      }
      if (!told) {
        warn0(
          `waiting up to ${Math.ceil(wait / 1000)} s for ${describeWriter(record)} to stop before ${why}`,
          {
            file: writerKey(epoch),
          },
        );
        told = true;
      }
      this.assertValid(store);
      await sleep(Math.max(10, Math.min(wait, 1000)));
    }
  }

  /**
   * Remove the files of uncommitted steps after `fromStep` (left by a save that crashed, or by an earlier
   * writer), once no earlier writer can still be writing them. Returns the steps cleared.
   */
  async clearUncommitted(
    store: Store,
    fromStep: number,
    conflicts: (meta: Record<string, unknown> | null) => boolean = () => true,
  ): Promise<number[]> {
    // Only the steps that `conflicts` picks by their meta (null: none published): an exact replay writes
    // the same bytes, shares the files, and must not wait for the writer it replaces.
    const chosen = new Map<number, boolean>();
    const pick = async (step: number): Promise<boolean> => {
      if (step <= fromStep) return false;
      if (!chosen.has(step)) {
        const meta = await store
          .read(metaFile(step))
          .then((b) => JSON.parse(b.toString('utf8')) as Record<string, unknown>)
          .catch(() => null);
        chosen.set(step, conflicts(meta));
      }
      return chosen.get(step)!;
    };
    const doomed = await uncommittedFilesOf(store, pick);
    if (doomed.length === 0) return [];
    await this.awaitPredecessors(store, `removing the files of uncommitted steps after ${fromStep}`);
    const removed = await this.removing(store, async () => {
      // Listed again: a step an earlier writer committed in the meantime keeps its files.
      const files = await uncommittedFilesOf(store, pick);
      for (const { key } of files) await store.delete(key);
      return files;
    });
    const steps = [...new Set(removed.map((f) => f.step))].sort((a, b) => a - b);
    if (steps.length > 0) {
      log0(
        `removed ${removed.length} file(s) of uncommitted step(s) ${steps.join(', ')} in ${store.location}, left by an earlier save that never committed`,
      );
    }
    return steps;
  }
}

async function uncommittedFilesOf(
  store: Store,
  which: (step: number) => Promise<boolean>,
): Promise<Array<{ key: string; step: number }>> {
  const entries = await store.list();
  const committed = new Set<number>();
  const parsed = entries.map((e) => ({ key: e.key, p: parseFileName(e.key) }));
  for (const { p } of parsed) if (p?.kind === 'manifest') committed.add(p.step!);
  const out: Array<{ key: string; step: number }> = [];
  for (const { key, p } of parsed) {
    if (!p || p.step === undefined || !STEP_DATA.has(p.kind)) continue;
    if (!committed.has(p.step) && (await which(p.step))) out.push({ key, step: p.step });
  }
  return out;
}

export function fenceFromToken(token: FenceToken): WriterFence {
  return new WriterFence(token);
}

/** The environment variable that hands a writer's fencing token (`EPOCH:ID`) to a command program. */
export const WRITER_TOKEN_ENV = 'CKPT_WRITER';

/** A lease's fencing token as text, for another process of the same writer (a command program's commit). */
export function formatWriterToken(token: Pick<FenceToken, 'epoch' | 'id'>): string {
  return `${token.epoch}:${token.id}`;
}

/**
 * The fence of a writer whose lease another process holds and renews (a command program's `ckpt commit`
 * under its segment's runner): its validity is what the holder last recorded in the store, read now.
 * A token whose record is gone or belongs to another writer is fenced.
 */
export async function fenceFromWriterToken(location: Location, text: string): Promise<FenceToken> {
  const store = openStore(location);
  const m = /^(\d+):([0-9a-f]+)$/.exec(text.trim());
  if (!m) {
    throw new InvalidArgumentError(`${WRITER_TOKEN_ENV}: "${text}" is not a writer token (EPOCH:ID)`, {
      field: WRITER_TOKEN_ENV,
    });
  }
  const epoch = Number(m[1]);
  const record = await readWriter(store, epoch);
  if (!record || record.id !== m[2]) {
    throw new WriterFencedError(
      `the writer lease ${writerKey(epoch)} of ${store.location} ${record ? 'belongs to another writer' : 'is gone'}; ` +
        'stopping without committing',
      { file: writerKey(epoch), field: 'lease' },
    );
  }
  const validity = new SharedArrayBuffer(8);
  new Float64Array(validity)[0] = record.released ? 0 : Date.parse(record.expires_at);
  return { epoch, id: record.id, ttlMs: record.ttl_ms, validity };
}

export type TakeOver =
  /** Only a free directory (no writer, or one released or expired). */
  | 'never'
  /** Also one whose writer trains for the same pipeline (`claim`): a retry replacing its own attempt. */
  | 'same-claim'
  /** Any writer, at once (`--take-over`; logged). */
  | 'always';

export interface AcquireOptions {
  /** Who writes, for people (default: host and process id). */
  holder?: string;
  /** The pipeline the writer trains for (its workflow id). */
  claim?: string | null;
  takeOver?: TakeOver;
  ttlMs?: number;
  /**
   * Renewals extend the lease only as far as the last confirmation (`confirm()`) allows: a pipeline's
   * training renews only while the Temporal server says its attempt is the current one.
   */
  gated?: boolean;
}

/** The holder's side of a writer lease: renewal and release. */
export class WriterLease extends WriterFence {
  private timer: NodeJS.Timeout | undefined;
  private confirmedAt: number;
  private lostError: CheckpointError | undefined;
  private renewing: Promise<void> | undefined;
  /** Called once when the lease is lost (taken over, or expired); the holder should stop writing. */
  onLost?: (err: CheckpointError) => void;

  constructor(
    readonly store: Store,
    private record: WriterRecord,
    token: FenceToken,
    private readonly gated: boolean,
  ) {
    super(token);
    this.confirmedAt = Date.parse(record.acquired_at);
  }

  get holder(): string {
    return this.record.holder;
  }

  get lost(): CheckpointError | undefined {
    return this.lostError;
  }

  /** The Temporal server confirmed, at `at`, that this writer's attempt is current (gated leases). */
  confirm(at = Date.now()): void {
    this.confirmedAt = Math.max(this.confirmedAt, at);
  }

  /**
   * Extend the lease by its TTL from now (gated: from the last confirmation, if earlier). Refuses to
   * extend a lease that has run out or was taken over.
   */
  renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async renewOnce(): Promise<void> {
    const started = Date.now();
    this.assertValid(this.store);
    await this.assertCurrent(this.store);
    const base = this.gated ? Math.min(started, this.confirmedAt) : started;
    const until = base + this.token.ttlMs;
    if (until <= this.validUntil()) return;
    const record = { ...this.record, expires_at: new Date(until).toISOString() };
    await this.store.put(writerKey(this.epoch), encode(record));
    this.record = record;
    // Only once the store says so: another writer must never see an earlier expiry than this one.
    this.setValidUntil(until);
  }

  /** Renew every quarter of the TTL until release; a lost lease calls onLost. */
  startRenewing(intervalMs = Math.max(250, Math.floor(this.token.ttlMs / 4))): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.renew().catch((err: unknown) => {
        if (err instanceof WriterFencedError || err instanceof WriterLeaseExpiredError) {
          this.stopRenewing();
          if (!this.lostError) {
            this.lostError = err;
            warn0(err.message, { file: writerKey(this.epoch) });
            this.onLost?.(err);
          }
        } else {
          warn0(`could not renew the writer lease of ${this.store.location}: ${(err as Error).message}`, {
            file: writerKey(this.epoch),
          });
        }
      });
    }, intervalMs);
    this.timer.unref();
  }

  stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Give the directory up: the next writer takes it without waiting. Best effort; never throws. */
  async release(): Promise<void> {
    this.stopRenewing();
    await this.renewing?.catch(() => undefined);
    // A lease that was lost or has run out is not this writer's to give up: its record stays as it was.
    if (this.lostError || this.validUntil() <= Date.now()) return;
    try {
      await this.assertCurrent(this.store);
      const record = { ...this.record, released: true, expires_at: new Date().toISOString() };
      await this.store.put(writerKey(this.epoch), encode(record));
      this.record = record;
      this.setValidUntil(0);
    } catch (err) {
      warn0(`could not release the writer lease of ${this.store.location}: ${(err as Error).message}`, {
        file: writerKey(this.epoch),
      });
    }
  }
}

export function defaultHolder(): string {
  return `${hostname()} pid ${process.pid}`;
}

/**
 * Take the directory's writer lease: the next epoch, created exclusively. A live writer of another run
 * makes it fail with WriterConflictError (exit 2) unless `takeOver` allows taking it over.
 */
export async function acquireWriter(location: Location, options: AcquireOptions = {}): Promise<WriterLease> {
  const store = openStore(location);
  const ttlMs = options.ttlMs ?? writerTtlMs();
  const claim = options.claim ?? null;
  const takeOver = options.takeOver ?? 'never';
  for (let tries = 0; tries < 5; tries++) {
    const epochs = await writerEpochs(store);
    const top = epochs.at(-1);
    const previous = top === undefined ? null : await readWriter(store, top);
    if (previous && mayStillWrite(previous)) {
      const ours = takeOver === 'same-claim' && claim !== null && previous.claim === claim;
      if (takeOver !== 'always' && !ours) {
        throw new WriterConflictError(
          `${store.location} is being written by ${describeWriter(previous)}, whose lease runs until ` +
            `${previous.expires_at}; stop that run first, or pass --take-over if it is gone`,
          { file: writerKey(previous.epoch), field: 'dir' },
        );
      }
      if (takeOver === 'always')
        warn0(`taking ${store.location} over from ${describeWriter(previous)} (--take-over)`, {
          file: writerKey(previous.epoch),
        });
    }
    const epoch = (top ?? 0) + 1;
    const started = Date.now();
    const record: WriterRecord = {
      epoch,
      id: randomBytes(8).toString('hex'),
      holder: options.holder ?? defaultHolder(),
      claim,
      ttl_ms: ttlMs,
      acquired_at: new Date(started).toISOString(),
      expires_at: new Date(started + ttlMs).toISOString(),
      released: false,
    };
    try {
      await store.put(writerKey(epoch), encode(record), { exclusive: true });
    } catch (err) {
      if (err instanceof AlreadyExistsError) continue;
      throw err;
    }
    const validity = new SharedArrayBuffer(8);
    new Float64Array(validity)[0] = started + ttlMs;
    const lease = new WriterLease(
      store,
      record,
      { epoch, id: record.id, ttlMs, validity },
      options.gated ?? false,
    );
    await tidyRecords(store, epoch);
    log0(`writer lease epoch ${epoch} of ${store.location} taken by ${record.holder}`, {}, 'debug');
    return lease;
  }
  throw new WriterConflictError(
    `${store.location}: other writers kept taking the writer lease; gave up after 5 tries`,
    {
      field: 'dir',
    },
  );
}

/**
 * Remove records of writers that stopped, except the newest two (the current one and its predecessor), and
 * the removal announcements they left when they died mid-removal.
 */
async function tidyRecords(store: Store, current: number): Promise<void> {
  const { epochs, removing } = await writerListing(store);
  for (const epoch of epochs.filter((e) => e < current - 1)) {
    const record = await readWriter(store, epoch).catch(() => null);
    if (!record || mayStillWrite(record)) continue;
    if (removing.includes(epoch)) await store.delete(removingKey(epoch)).catch(() => undefined);
    await store.delete(writerKey(epoch)).catch(() => undefined);
  }
}

/**
 * A file of uncommitted step `step` exists under `key` with other bytes than this writer's. The holder of
 * the lease (`fence`) removes it once no earlier writer can still be writing it, then publishes its own
 * exclusively. Without a fence, a lone writer (rank 0 of a library save) takes the lease for the
 * replacement, which fails if another writer holds it; other ranks never remove anything.
 */
export async function replaceStale(
  store: Store,
  step: number,
  key: string,
  put: () => Promise<PutResult>,
  options: { fence?: WriterFence; mayTakeLease: boolean },
): Promise<PutResult> {
  let fence = options.fence;
  let transient: WriterLease | undefined;
  if (!fence) {
    if (!options.mayTakeLease) {
      throw new FileConflictError(
        `${key} in ${store.location} exists with other bytes and step ${step} is not committed: another ` +
          'writer is saving this step, or an earlier save crashed; rank 0 of the next attempt removes such files',
        { file: key, step },
      );
    }
    transient = await acquireWriter(store, { holder: `${defaultHolder()} (replacing ${key})` });
    fence = transient;
  }
  try {
    await fence.awaitPredecessors(store, `replacing ${key}`);
    await fence.removing(store, async () => {
      if (await store.exists(manifestFile(step))) {
        throw new AlreadyCommittedError(
          `step ${step} is already committed in ${store.location} (${manifestFile(step)} exists); nothing was written`,
          { file: manifestFile(step), step },
        );
      }
      warn0(`replacing ${key} left by an earlier save of step ${step} that never committed`, {
        file: key,
        step,
      });
      await store.delete(key);
    });
    try {
      return await put();
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
      throw new FileConflictError(
        `${key} in ${store.location} was published again by another writer while this one replaced it`,
        { file: key, step },
      );
    }
  } finally {
    await transient?.release();
  }
}

/**
 * Asynchronous saves: the training loop hands over a host-memory snapshot of its tensors and goes on;
 * serialising, hashing and writing run on a worker thread, and the commit (gathering every rank's records,
 * writing the manifest) follows on this thread without blocking it. At most one save is in flight: the next
 * save waits for it, and its error surfaces there or at finish(). A step is reported committed only once
 * its manifest exists.
 *
 * The thread is an implementation detail: its errors come back as the same classes with the same fields
 * (AlreadyCommittedError stays exit 2, a TransientStoreError stays retryable), and its log lines go out
 * through this thread's logger, in its format.
 */
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import {
  commitCheckpoint,
  type SaveData,
  type SaveOptions,
  type SaveResult,
  writeCheckpointFiles,
} from './checkpoint';
import * as errors from './errors';
import { errorFromRecord, type ErrorRecord } from './errors';
import { type LogRecord, logForwarded } from './log';
import type { FileRecord } from './manifest';
import type { NamedTensors, Tensor } from './tensors';

export interface AsyncSaveOptions extends SaveOptions {
  /** The caller will never touch these tensors again: hand them over without copying. */
  transfer?: boolean;
  /**
   * Tensors whose storage is a SharedArrayBuffer are read by the save thread where they are, without a
   * copy. The caller leaves them unchanged until this save has finished (finish(), or the next save()
   * resolving); the trainer's reusable snapshot buffers (model/tensors.ts SnapshotBuffers) work this way.
   */
  shared?: boolean;
}

interface InFlight {
  step: number;
  promise: Promise<SaveResult>;
}

export interface AsyncSaverOptions {
  /** Write on a worker thread (default). Off: write on this thread, still without awaiting it. */
  workerThread?: boolean;
  /** Settings a worker thread needs to open stores (e.g. the S3 configuration). */
  storeConfig?: unknown;
  onCommitted?: (result: SaveResult) => void;
}

const THREAD = join(__dirname, 'async-save-thread.js');
const ERROR_CLASSES = errors.errorClasses(errors);

/** What the save thread posts: a log record, or the outcome of one write. */
export type SaveThreadMessage =
  { log: LogRecord } | { id: number; files: Record<string, FileRecord> } | { id: number; error: ErrorRecord };
const configKey = (storeConfig: unknown) => JSON.stringify(storeConfig ?? null);

/** A save thread started ahead of time (prestartSaveThread), taken by the first AsyncSaver that needs one. */
let spare: { worker: Worker; key: string } | null = null;

function startThread(storeConfig: unknown): Worker {
  const worker = new Worker(THREAD, { workerData: { storeConfig } });
  worker.unref();
  return worker;
}

/**
 * Starts a save thread before the first save needs it: loading the thread's code takes a few hundred
 * milliseconds, which the first save of a run would otherwise pay next to training. A worker's warm
 * standby child calls this while it waits. `storeConfig` must be what the AsyncSaver will be given.
 */
export function prestartSaveThread(storeConfig?: unknown): void {
  if (spare) return;
  const worker = startThread(storeConfig);
  worker.on('error', () => {
    if (spare?.worker === worker) spare = null;
  });
  spare = { worker, key: configKey(storeConfig) };
}

/** Whether a prestarted save thread is waiting (for tests and diagnostics). */
export function hasSpareSaveThread(): boolean {
  return spare !== null;
}

export class AsyncSaver {
  private inFlight: InFlight | null = null;
  private worker: Worker | null = null;
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { resolve: (files: Record<string, FileRecord>) => void; reject: (err: Error) => void }
  >();

  constructor(private readonly options: AsyncSaverOptions = {}) {}

  /**
   * Snapshot `data` and start saving it. Resolves once the snapshot is taken (and any previous save has
   * finished); rejects with the previous save's error if it failed.
   */
  async save(dir: string, step: number, data: SaveData, options: AsyncSaveOptions = {}): Promise<void> {
    await this.finish();
    const snapshot: SaveData = {
      meta: JSON.parse(JSON.stringify(data.meta)) as Record<string, unknown>,
      model: data.model ? snapshotTensors(data.model, options) : undefined,
      optimizer: data.optimizer ? snapshotTensors(data.optimizer, options) : undefined,
    };
    const promise = (async () => {
      const files = await this.writeFiles(dir, step, snapshot, options);
      const result = await commitCheckpoint(dir, step, files, options);
      if (result.committed) this.options.onCommitted?.(result);
      return result;
    })();
    // Keep an unobserved failure from crashing the process; it is rethrown by the next save or finish().
    promise.catch(() => undefined);
    this.inFlight = { step, promise };
  }

  /** Step of the save in flight, or null. */
  get savingStep(): number | null {
    return this.inFlight?.step ?? null;
  }

  /** Wait for the save in flight; rethrows its error. */
  async finish(): Promise<SaveResult | null> {
    const current = this.inFlight;
    if (!current) return null;
    try {
      return await current.promise;
    } finally {
      if (this.inFlight === current) this.inFlight = null;
    }
  }

  async close(): Promise<void> {
    try {
      await this.finish();
    } finally {
      await this.worker?.terminate();
      this.worker = null;
    }
  }

  private writeFiles(
    dir: string,
    step: number,
    data: SaveData,
    options: SaveOptions,
  ): Promise<Record<string, FileRecord>> {
    const writeOptions = {
      rank: options.rank,
      worldSize: options.worldSize,
      saveDtype: options.saveDtype,
      fence: options.fence,
    };
    if (this.options.workerThread === false) return writeCheckpointFiles(dir, step, data, writeOptions);
    const worker = this.ensureWorker();
    const id = this.nextId++;
    const transfer = [...buffersOf(data.model), ...buffersOf(data.optimizer ?? undefined)];
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, dir, step, data, options: writeOptions }, transfer);
    });
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    let worker: Worker;
    if (spare && spare.key === configKey(this.options.storeConfig)) {
      worker = spare.worker;
      spare = null;
      worker.removeAllListeners('error');
    } else {
      worker = startThread(this.options.storeConfig);
    }
    worker.on('message', (msg: SaveThreadMessage) => {
      if ('log' in msg) return logForwarded(msg.log);
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      if ('files' in msg) waiter.resolve(msg.files);
      else waiter.reject(errorFromRecord(msg.error, ERROR_CLASSES));
    });
    worker.on('error', (err) => {
      for (const waiter of this.pending.values()) waiter.reject(err);
      this.pending.clear();
      this.worker = null;
    });
    this.worker = worker;
    return worker;
  }
}

/**
 * Copies (or, when transferring, keeps) each tensor in its own ArrayBuffer so it can move to the thread;
 * with `shared`, a tensor in a SharedArrayBuffer is kept where it is.
 */
function snapshotTensors(tensors: NamedTensors, options: AsyncSaveOptions): NamedTensors {
  const out: NamedTensors = {};
  for (const [name, t] of Object.entries(tensors)) {
    const whole =
      t.data.byteOffset === 0 &&
      t.data.byteLength === t.data.buffer.byteLength &&
      t.data.buffer instanceof ArrayBuffer;
    const keep =
      (options.transfer && whole) || (options.shared && t.data.buffer instanceof SharedArrayBuffer);
    const data: ArrayBufferView = keep
      ? t.data
      : new Uint8Array(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    out[name] = { dtype: t.dtype, shape: [...t.shape], data } satisfies Tensor;
  }
  return out;
}

function buffersOf(tensors: NamedTensors | undefined): ArrayBuffer[] {
  if (!tensors) return [];
  const seen = new Set<ArrayBuffer>();
  for (const t of Object.values(tensors)) if (t.data.buffer instanceof ArrayBuffer) seen.add(t.data.buffer);
  return [...seen];
}

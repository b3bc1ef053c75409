/**
 * A small process group for the ranks of one training job (torch.distributed with gloo, in miniature).
 *
 * Topology: a full mesh — one TCP connection per pair of ranks (see rendezvous.ts). Jobs here run a few
 * ranks, so W(W-1)/2 connections are cheap, and a mesh lets every collective talk to its peers directly.
 *
 * Determinism: every reduction happens exactly once, at the rank that owns the slice, and always in rank
 * order: out = ((x0 + x1) + x2) + ... + x(W-1), each step rounded to float32 (the same bits as a sequential
 * float32 loop over the ranks). allReduce = reduce-scatter (slice r of every rank goes to rank r, which
 * sums it in that order) + all-gather (the owners' bits are copied everywhere). So every rank ends with
 * the same bits, and a rerun on the same inputs gives the same bits, whatever the timing or chunking.
 * Traffic per rank is (W-1)/W of the array each way, like a ring, in 4 MiB frames (chunkElements).
 * broadcast is a star from the root (it uploads the array W-1 times: fine for the few ranks of a job).
 *
 * Ordering and failure: collectives run one at a time in call order (every rank must call the same ones in
 * the same order; frames carry an op code and sequence number, so a mismatch is a CollectiveMismatchError,
 * not silent corruption). Each has a timeout. A peer whose connection drops fails the group at once
 * (PeerLostError naming it); silence fails it after timeoutMs (CollectiveTimeoutError). The failing rank
 * sends Abort with its error to every other rank, which rebuild the same typed error, so all live ranks
 * fail promptly with the root cause. After any failure the group is broken: it has closed its sockets and
 * every later call rejects at once with ProcessGroupBrokenError (cause: the first failure).
 */
import type { Coordinator } from '../../checkpoint/coordinator';
import type { FileRecord } from '../../checkpoint/manifest';
import {
  CollectiveMismatchError,
  CollectiveTimeoutError,
  DistributedError,
  ProcessGroupBrokenError,
  ProcessGroupClosedError,
  abortReport,
  fromAbortReport,
  type AbortReport,
} from './errors';
import { type Conn, Kind, MAX_FRAME_BYTES } from './framing';
import { type ProcessGroupOptions, checkOptions, evenCounts, optionsFromEnv } from './options';
import { jsonPayload, parseJson, rendezvous } from './rendezvous';
import { OPS, type OpCtx, type OpName, type ReduceOp, Wire } from './wire';

export { type ProcessGroupOptions, evenCounts, optionsFromEnv } from './options';

export type { ReduceOp } from './wire';

export interface ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  /** Reduces IN PLACE: `data` holds the result on every rank, and is returned (unspecified if it rejects). */
  allReduce(data: Float32Array, op?: ReduceOp): Promise<Float32Array>;
  /** A new array: rank r's reduced slice r (counts[i] elements for rank i; sum(counts) = data.length). */
  reduceScatter(data: Float32Array, counts: number[], op?: ReduceOp): Promise<Float32Array>;
  /** A new array: every rank's slice, concatenated in rank order (slice.length must be counts[rank]). */
  allGather(slice: Float32Array, counts: number[]): Promise<Float32Array>;
  /** IN PLACE on the non-root ranks: `data` (same length everywhere) gets root's values; returned. */
  broadcast(data: Float32Array, root?: number): Promise<Float32Array>;
  barrier(): Promise<void>;
  /** Root gets every rank's value (index = rank, as JSON round-trips it); the others get null. */
  gatherJson<T>(value: T, root?: number): Promise<T[] | null>;
  /** Every rank gets root's value (the others' argument is ignored). */
  broadcastJson<T>(value: T | null, root?: number): Promise<T>;
  /** For saveCheckpoint: rank 0 gathers every rank's file records over the group (no store polling). */
  coordinator(): Coordinator;
  /**
   * Tell the peers we leave and close every socket; idempotent. An op in flight rejects (closed). A healthy
   * group keeps its sockets (and so the process) alive until this is called; a broken one has closed them.
   */
  close(): Promise<void>;
}

export async function initProcessGroup(options: ProcessGroupOptions): Promise<ProcessGroup> {
  const o = checkOptions(options);
  const conns = await rendezvous({ ...o, connectTimeoutMs: o.connectTimeoutMs });
  return new TcpProcessGroup(o.rank, o.worldSize, conns, o.timeoutMs, o.chunkElements);
}

/** initProcessGroup(optionsFromEnv()), with explicit overrides (e.g. timeoutMs). */
export function fromEnv(
  overrides: Partial<ProcessGroupOptions> = {},
  env?: NodeJS.ProcessEnv,
): Promise<ProcessGroup> {
  return initProcessGroup({ ...optionsFromEnv(env), ...overrides });
}

class TcpProcessGroup implements ProcessGroup {
  private seq = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private broken: Error | null = null;
  private closing: Promise<void> | null = null;
  private current: { reject: (err: Error) => void } | null = null;
  private readonly wire: Wire;
  private readonly peers: number[];

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    conns: Array<Conn | null>,
    private readonly timeoutMs: number,
    chunk: number,
  ) {
    this.wire = new Wire(rank, worldSize, conns, chunk);
    this.peers = this.wire.peers;
    for (const c of conns) {
      if (!c) continue;
      c.handlers = {
        onLost: (_c, err) => this.fail(err),
        onControl: (conn, f) => {
          // Bye: nothing yet. The peer left cleanly; only an op that still needs it fails (recv rejects).
          if (f.kind !== Kind.Abort) return;
          const report = parseJson(f) as AbortReport;
          this.fail(fromAbortReport(conn.peer, report), report);
        },
      };
    }
  }

  allReduce(data: Float32Array, op: ReduceOp = 'sum'): Promise<Float32Array> {
    return this.run('allReduce', async (ctx) => {
      checkOp(op);
      const counts = evenCounts(data.length, this.worldSize);
      const mine = await this.wire.reduceScatter(ctx, data, counts, op);
      // Safe to overwrite `data` now: reduceScatterCore returned only after our sends left our buffers.
      await this.wire.allGather(ctx, mine, counts, data);
      return data;
    });
  }

  reduceScatter(data: Float32Array, counts: number[], op: ReduceOp = 'sum'): Promise<Float32Array> {
    return this.run('reduceScatter', (ctx) => {
      checkOp(op);
      this.checkCounts(counts, data.length, 'data.length');
      return this.wire.reduceScatter(ctx, data, counts, op);
    });
  }

  allGather(slice: Float32Array, counts: number[]): Promise<Float32Array> {
    return this.run('allGather', async (ctx) => {
      this.checkCounts(counts, null, '');
      if (slice.length !== counts[this.rank]) {
        throw new CollectiveMismatchError(
          `allGather: rank ${this.rank} has a slice of ${slice.length} elements, counts say ${counts[this.rank]}`,
        );
      }
      const out = new Float32Array(counts.reduce((a, b) => a + b, 0));
      await this.wire.allGather(ctx, slice, counts, out);
      return out;
    });
  }

  broadcast(data: Float32Array, root = 0): Promise<Float32Array> {
    return this.run('broadcast', async (ctx) => {
      this.checkRoot(root);
      if (this.rank === root)
        await Promise.all(this.peers.map((p) => this.wire.sendFloats(ctx, p, data, data.length)));
      else await this.wire.recvInto(ctx, root, data, data.length);
      return data;
    });
  }

  barrier(): Promise<void> {
    return this.run('barrier', async (ctx) => {
      await Promise.all(
        this.peers.map(async (p) => {
          await this.conn(p).send(Kind.Token, ctx.op, ctx.seq, 0);
          await this.wire.recvFrame(ctx, p, Kind.Token, 0);
        }),
      );
    });
  }

  gatherJson<T>(value: T, root = 0): Promise<T[] | null> {
    return this.run('gatherJson', async (ctx) => {
      this.checkRoot(root);
      const payload = checkedJson(value);
      if (this.rank !== root) {
        await this.conn(root).send(Kind.Json, ctx.op, ctx.seq, root, payload);
        await this.conn(root).flush();
        return null;
      }
      const out: T[] = new Array<T>(this.worldSize);
      out[root] = JSON.parse(Buffer.from(payload).toString('utf8')) as T;
      await Promise.all(
        this.peers.map(
          async (p) => (out[p] = parseJson(await this.wire.recvFrame(ctx, p, Kind.Json, root)) as T),
        ),
      );
      return out;
    });
  }

  broadcastJson<T>(value: T | null, root = 0): Promise<T> {
    return this.run('broadcastJson', async (ctx) => {
      this.checkRoot(root);
      if (this.rank !== root) return parseJson(await this.wire.recvFrame(ctx, root, Kind.Json, root)) as T;
      const payload = checkedJson(value);
      await Promise.all(this.peers.map((p) => this.conn(p).send(Kind.Json, ctx.op, ctx.seq, root, payload)));
      await Promise.all(this.peers.map((p) => this.conn(p).flush()));
      return JSON.parse(Buffer.from(payload).toString('utf8')) as T;
    });
  }

  coordinator(): Coordinator {
    return {
      gatherFileRecords: async (step, rank, worldSize, files) => {
        if (rank !== this.rank || worldSize !== this.worldSize) {
          const err = new CollectiveMismatchError(
            `saveCheckpoint was given rank ${rank} of ${worldSize}, but this process group is rank ${this.rank} of ${this.worldSize}`,
            { step },
          );
          this.fail(err); // the other ranks would otherwise wait for us until their timeout
          throw err;
        }
        const all = await this.gatherJson<{ step: number; files: Record<string, FileRecord> }>(
          { step, files },
          0,
        );
        if (!all) return null;
        const other = all.findIndex((e) => e.step !== step);
        if (other >= 0) {
          throw new CollectiveMismatchError(
            `step ${step}: rank ${other} was saving step ${all[other]!.step}; not committed`,
            { step },
          );
        }
        return all.map((e) => e.files);
      },
    };
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.current?.reject(
      new ProcessGroupClosedError(`rank ${this.rank}: the process group was closed during a collective`),
    );
    this.closing = Promise.all(
      this.peers.map(async (p) => {
        const c = this.conn(p);
        if (!c.ended) await c.send(Kind.Bye, 0, 0, 0).catch(() => undefined);
        await c.close();
      }),
    ).then(() => undefined);
    return this.closing;
  }

  // ---- machinery ----

  /** Queue an op behind the ones called before it; run it under the group's timeout and failure rules. */
  private run<T>(name: OpName, body: (ctx: OpCtx) => Promise<T>): Promise<T> {
    const gate = this.gate(name);
    if (gate) return Promise.reject(gate);
    const p = this.chain.then(() => this.execute(name, body));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private gate(name: string): Error | null {
    if (this.closing)
      return new ProcessGroupClosedError(`rank ${this.rank}: ${name} called on a closed process group`);
    if (this.broken) {
      return new ProcessGroupBrokenError(
        `rank ${this.rank}: ${name}: the process group is unusable after an earlier failure: ${this.broken.message}`,
        {
          cause: this.broken,
        },
      );
    }
    return null;
  }

  private async execute<T>(name: OpName, body: (ctx: OpCtx) => Promise<T>): Promise<T> {
    const gate = this.gate(name);
    if (gate) throw gate;
    this.seq = (this.seq + 1) >>> 0;
    const ctx: OpCtx = { name, op: OPS.indexOf(name), seq: this.seq, waiting: new Set() };
    let timer: NodeJS.Timeout | undefined;
    const failed = new Promise<never>((_, reject) => {
      this.current = { reject };
      timer = setTimeout(() => {
        const waits = [...ctx.waiting].sort((a, b) => a - b);
        const what =
          waits.length > 0
            ? `waiting for rank${waits.length > 1 ? 's' : ''} ${waits.join(', ')}`
            : 'blocked sending';
        const msg = `${name} #${ctx.seq} timed out after ${this.timeoutMs} ms on rank ${this.rank}, ${what}`;
        this.fail(new CollectiveTimeoutError(name, this.timeoutMs, waits, msg));
      }, this.timeoutMs);
    });
    try {
      if (this.worldSize === 1) return await body(ctx);
      return await Promise.race([body(ctx), failed]);
    } catch (err) {
      this.fail(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
      this.current = null;
    }
  }

  /**
   * First failure wins: reject the op in flight, tell every peer why, close the sockets. A failure learnt
   * from another rank's Abort is relayed as it came: without it, a peer could see our sockets close before
   * the origin's Abort arrives and blame us instead of the real cause.
   */
  private fail(err: Error, relay?: AbortReport): void {
    if (this.broken || this.closing) return;
    this.broken = err;
    this.current?.reject(err);
    const report = jsonPayload(relay ?? abortReport(err, this.rank));
    for (const p of this.peers) {
      const c = this.conn(p);
      if (!c.ended) c.send(Kind.Abort, 0, 0, 0, report).catch(() => undefined);
      void c.close(); // end() after the Abort: delivered unless the peer stops reading (then destroyed)
    }
  }

  private conn(peer: number): Conn {
    return this.wire.conn(peer);
  }

  private checkCounts(counts: number[], total: number | null, what: string): void {
    const ok = counts.length === this.worldSize && counts.every((c) => Number.isSafeInteger(c) && c >= 0);
    if (!ok)
      throw new CollectiveMismatchError(
        `counts must be ${this.worldSize} non-negative integers, got [${counts.join(', ')}]`,
      );
    const sum = counts.reduce((a, b) => a + b, 0);
    if (total !== null && sum !== total)
      throw new CollectiveMismatchError(`counts sum to ${sum}, but ${what} is ${total}`);
  }

  private checkRoot(root: number): void {
    if (!Number.isSafeInteger(root) || root < 0 || root >= this.worldSize) {
      throw new CollectiveMismatchError(`root must be a rank in [0, ${this.worldSize}), got ${root}`);
    }
  }
}

function checkOp(op: string): void {
  if (op !== 'sum' && op !== 'mean')
    throw new CollectiveMismatchError(`unknown reduce op '${op}' (sum or mean)`);
}

function checkedJson(value: unknown): Uint8Array {
  const payload = jsonPayload(value);
  if (payload.byteLength > MAX_FRAME_BYTES)
    throw new DistributedError(
      `a JSON value of ${payload.byteLength} bytes is too large for gatherJson/broadcastJson`,
    );
  return payload;
}

/**
 * The tensor side of the collectives: chunked float32 transfers between ranks, and the two phases every
 * reduction is built from. The reduction order lives here — see reduceScatter.
 */
import { CollectiveMismatchError } from './errors';
import { type Conn, type Frame, Kind } from './framing';

export type ReduceOp = 'sum' | 'mean';

export const OPS = [
  '',
  'allReduce',
  'reduceScatter',
  'allGather',
  'broadcast',
  'barrier',
  'gatherJson',
  'broadcastJson',
] as const;
export type OpName = Exclude<(typeof OPS)[number], ''>;

export interface OpCtx {
  name: OpName;
  op: number;
  seq: number;
  /** Ranks this op is waiting to hear from right now (for the timeout message). */
  waiting: Set<number>;
}

export class Wire {
  /** Ranks other than ours, ascending. */
  readonly peers: number[];

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly conns: Array<Conn | null>,
    /** Floats per Data frame. */
    readonly chunk: number,
  ) {
    this.peers = conns.map((c, r) => (c ? r : -1)).filter((r) => r >= 0);
  }

  conn(peer: number): Conn {
    return this.conns[peer]!;
  }

  /**
   * Slice p of `data` goes to rank p; our slice comes back from everyone and is summed here, in rank order
   * 0..W-1 whoever sent first. Resolves after our sends have left our buffers (`data` may then change).
   */
  async reduceScatter(ctx: OpCtx, data: Float32Array, counts: number[], op: ReduceOp): Promise<Float32Array> {
    const r = this.rank;
    const W = this.worldSize;
    const offs = offsets(counts);
    const n = counts[r]!;
    const out = new Float32Array(n);
    const sends = this.peers.map((p) =>
      this.sendFloats(ctx, p, data.subarray(offs[p], offs[p]! + counts[p]!), counts[p]!),
    );
    const reduce = async () => {
      for (let c = 0; c < n; c += this.chunk) {
        const len = Math.min(this.chunk, n - c);
        const own = data.subarray(offs[r]! + c, offs[r]! + c + len);
        const parts = await Promise.all(
          Array.from({ length: W }, (_, q) => (q === r ? own : this.recvData(ctx, q, len, n))),
        );
        const acc = out.subarray(c, c + len);
        acc.set(parts[0]!);
        // Fixed rank order, float32 rounding at every step: identical bits on every run.
        for (let q = 1; q < W; q++) {
          const src = parts[q]!;
          for (let i = 0; i < len; i++) acc[i]! += src[i]!;
        }
        if (op === 'mean') for (let i = 0; i < len; i++) acc[i]! /= W;
      }
    };
    await Promise.all([...sends, reduce()]);
    return out;
  }

  /** Every rank's slice into `target` at its offset; `mine` is ours. */
  async allGather(ctx: OpCtx, mine: Float32Array, counts: number[], target: Float32Array): Promise<void> {
    const offs = offsets(counts);
    target.set(mine, offs[this.rank]);
    await Promise.all([
      ...this.peers.map((p) => this.sendFloats(ctx, p, mine, mine.length)),
      ...this.peers.map((p) =>
        this.recvInto(ctx, p, target.subarray(offs[p], offs[p]! + counts[p]!), counts[p]!),
      ),
    ]);
  }

  /** Send `arr` in chunks (aux = total elements, checked by the receiver); resolves once flushed. */
  async sendFloats(ctx: OpCtx, peer: number, arr: Float32Array, total: number): Promise<void> {
    const c = this.conn(peer);
    for (let i = 0; i < arr.length; i += this.chunk) {
      const part = arr.subarray(i, Math.min(arr.length, i + this.chunk));
      await c.send(
        Kind.Data,
        ctx.op,
        ctx.seq,
        total,
        new Uint8Array(part.buffer, part.byteOffset, part.byteLength),
      );
    }
    await c.flush();
  }

  async recvInto(ctx: OpCtx, peer: number, target: Float32Array, total: number): Promise<void> {
    for (let i = 0; i < target.length; i += this.chunk) {
      const len = Math.min(this.chunk, target.length - i);
      target.set(await this.recvData(ctx, peer, len, total), i);
    }
  }

  async recvData(ctx: OpCtx, peer: number, len: number, total: number): Promise<Float32Array> {
    const f = await this.recvFrame(ctx, peer, Kind.Data, total);
    if (f.payload.byteLength !== len * 4) {
      throw new CollectiveMismatchError(
        `${ctx.name} #${ctx.seq}: rank ${peer} sent a chunk of ${f.payload.byteLength / 4} floats, rank ${this.rank} expected ${len} (different chunkElements?)`,
      );
    }
    return new Float32Array(f.payload.buffer, f.payload.byteOffset, len);
  }

  async recvFrame(ctx: OpCtx, peer: number, kind: number, aux: number): Promise<Frame> {
    ctx.waiting.add(peer);
    const f = await this.conn(peer).recv();
    ctx.waiting.delete(peer);
    if (f.op !== ctx.op || f.seq !== ctx.seq || f.kind !== kind) {
      throw new CollectiveMismatchError(
        `rank ${this.rank} is in ${ctx.name} #${ctx.seq}, but rank ${peer} sent a frame of ${OPS[f.op] || `op ${f.op}`} #${f.seq}: ` +
          'every rank must call the same collectives in the same order',
      );
    }
    if (f.aux !== aux) {
      const what = kind === Kind.Json ? 'root' : 'element count';
      throw new CollectiveMismatchError(
        `${ctx.name} #${ctx.seq}: ${what} differs: rank ${this.rank} expected ${aux} from rank ${peer}, which sent ${f.aux}`,
      );
    }
    return f;
  }
}

export function offsets(counts: number[]): number[] {
  const out: number[] = [];
  let o = 0;
  for (const c of counts) {
    out.push(o);
    o += c;
  }
  return out;
}

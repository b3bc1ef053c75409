/**
 * Length-prefixed binary frames over one TCP connection between two ranks.
 *
 * A frame is a 14-byte little-endian header — payload bytes (u32), kind (u8), op (u8), sequence number (u32),
 * aux (u32) — then the payload. Tensors travel as raw little-endian float32 bytes; JSON only for small
 * control values. TCP delivers bytes in arbitrary pieces, so the parser keeps a list of received buffers
 * and cuts frames out of it whatever the piece boundaries are.
 *
 * Flow control both ways: a sender waits for 'drain' when the socket's buffer is full, and a receiver
 * that has more than `highWaterBytes` of frames nobody asked for yet pauses the socket, so TCP pushes back
 * on the sender and memory stays bounded by a few chunks per peer.
 */
import { endianness } from 'node:os';
import type { Socket } from 'node:net';
import { PeerLostError } from './errors';

if (endianness() !== 'LE')
  throw new Error('train/dist sends float32 as raw little-endian bytes: big-endian hosts are not supported');

export const HEADER_BYTES = 14;
/** Larger frames are refused: a stray client writing garbage must not make us buffer gigabytes. */
export const MAX_FRAME_BYTES = 1 << 30;

export const Kind = {
  Hello: 1,
  Peers: 2,
  Ready: 3,
  Go: 4,
  Reject: 5,
  Abort: 6,
  Bye: 7,
  Data: 8,
  Json: 9,
  Token: 10,
  MeshHello: 11,
} as const;

export interface Frame {
  kind: number;
  op: number;
  seq: number;
  aux: number;
  /** A fresh buffer (offset 0), so a Float32Array view over it is always aligned. */
  payload: Uint8Array;
}

export function encodeHeader(
  kind: number,
  op: number,
  seq: number,
  aux: number,
  payloadBytes: number,
): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt32LE(payloadBytes, 0);
  h.writeUInt8(kind, 4);
  h.writeUInt8(op, 5);
  h.writeUInt32LE(seq >>> 0, 6);
  h.writeUInt32LE(aux >>> 0, 10);
  return h;
}

/** Cuts frames out of a byte stream delivered in pieces of any size. */
export class FrameParser {
  private chunks: Buffer[] = [];
  private first = 0; // index of the oldest unconsumed chunk (no shift(): O(1) per consumed piece)
  private head = 0; // offset into chunks[first]
  private buffered = 0;
  private header: Buffer | null = null;

  push(piece: Buffer): Frame[] {
    this.chunks.push(piece);
    this.buffered += piece.length;
    const out: Frame[] = [];
    for (;;) {
      if (!this.header) {
        if (this.buffered < HEADER_BYTES) break;
        this.header = Buffer.allocUnsafe(HEADER_BYTES);
        this.take(HEADER_BYTES, this.header);
        const len = this.header.readUInt32LE(0);
        if (len > MAX_FRAME_BYTES) throw new Error(`frame of ${len} bytes is larger than ${MAX_FRAME_BYTES}`);
      }
      const h = this.header;
      const len = h.readUInt32LE(0);
      if (this.buffered < len) break;
      const payload = new Uint8Array(new ArrayBuffer(len));
      this.take(len, payload);
      this.header = null;
      out.push({
        kind: h.readUInt8(4),
        op: h.readUInt8(5),
        seq: h.readUInt32LE(6),
        aux: h.readUInt32LE(10),
        payload,
      });
    }
    return out;
  }

  /** Copy the next n buffered bytes into target and drop them. */
  private take(n: number, target: Uint8Array): void {
    let done = 0;
    while (done < n) {
      const c = this.chunks[this.first]!;
      const k = Math.min(n - done, c.length - this.head);
      target.set(c.subarray(this.head, this.head + k), done);
      done += k;
      this.head += k;
      if (this.head === c.length) {
        this.first++;
        this.head = 0;
      }
    }
    this.buffered -= n;
    if (this.first === this.chunks.length) {
      this.chunks = [];
      this.first = 0;
    } else if (this.first > 1024) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }
}

export interface ConnHandlers {
  /** Abort and Bye frames are handled as they arrive, never queued behind data. */
  onControl?(conn: Conn, frame: Frame): void;
  /** The connection ended without a Bye while we were not closing it ourselves. */
  onLost?(conn: Conn, err: PeerLostError): void;
}

/** One peer connection: ordered frames in, backpressured frames out. */
export class Conn {
  /** The peer's rank once known (-1 during the handshake). */
  peer = -1;
  handlers: ConnHandlers = {};
  private readonly parser = new FrameParser();
  private queue: Frame[] = [];
  private queuedBytes = 0;
  private paused = false;
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  private endedWhy: string | null = null;
  private byeReceived = false;
  private closing = false;
  private lastFlush: Promise<void> = Promise.resolve();
  private readonly closed: Promise<void>;

  constructor(
    readonly socket: Socket,
    private readonly highWaterBytes = 16 << 20,
  ) {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 5_000);
    socket.on('data', (piece: Buffer) => this.onData(piece));
    socket.on('error', (err) => this.markEnded(`socket error: ${err.message}`));
    socket.on('end', () => this.markEnded('the peer closed the connection'));
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.markEnded('connection closed');
        resolve();
      }),
    );
  }

  get ended(): boolean {
    return this.endedWhy !== null;
  }

  get remote(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  lostError(): PeerLostError {
    const who = this.peer >= 0 ? `rank ${this.peer}` : `peer ${this.remote}`;
    if (this.byeReceived) return new PeerLostError(this.peer, `${who} closed its process group`);
    return new PeerLostError(
      this.peer,
      `connection to ${who} lost (${this.endedWhy ?? 'closed'}): process exited or was killed?`,
    );
  }

  /** Queue one frame for sending; resolves once more may be written (after 'drain' if the buffer is full). */
  async send(kind: number, op: number, seq: number, aux: number, payload?: Uint8Array): Promise<void> {
    if (this.ended || this.closing) throw this.lostError();
    const bytes = payload?.byteLength ?? 0;
    // The write callback fires once the bytes are handed to the kernel: until then the caller's array is
    // still referenced by the socket and must not be overwritten (see flush()).
    let ok = true;
    const flushed = new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(this.lostError()) : resolve());
      const header = encodeHeader(kind, op, seq, aux, bytes);
      if (bytes === 0) ok = this.socket.write(header, cb);
      else {
        this.socket.write(header);
        ok = this.socket.write(payload!, cb);
      }
    });
    flushed.catch(() => undefined); // observed through flush(); never an unhandled rejection
    this.lastFlush = flushed;
    if (!ok) await this.drained();
  }

  /** Resolves when every frame sent so far has left this process's buffers. */
  flush(): Promise<void> {
    return this.lastFlush;
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(this.lostError());
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  /** The next data frame from this peer, in the order it was sent. */
  recv(): Promise<Frame> {
    const f = this.queue.shift();
    if (f) {
      this.queuedBytes -= f.payload.byteLength;
      if (this.paused && this.queuedBytes <= this.highWaterBytes / 2) {
        this.paused = false;
        this.socket.resume();
      }
      return Promise.resolve(f);
    }
    if (this.ended) return Promise.reject(this.lostError());
    if (this.waiter) return Promise.reject(new Error('internal: two receives pending on one connection'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private onData(piece: Buffer): void {
    if (this.closing) return;
    let frames: Frame[];
    try {
      frames = this.parser.push(piece);
    } catch (err) {
      this.socket.destroy(err as Error);
      return;
    }
    for (const f of frames) {
      if (f.kind === Kind.Bye) this.byeReceived = true;
      if (f.kind === Kind.Abort || f.kind === Kind.Bye) {
        this.handlers.onControl?.(this, f);
        continue;
      }
      const w = this.waiter;
      if (w) {
        this.waiter = null;
        w.resolve(f);
        continue;
      }
      this.queue.push(f);
      this.queuedBytes += f.payload.byteLength;
      if (!this.paused && this.queuedBytes > this.highWaterBytes) {
        this.paused = true;
        this.socket.pause();
      }
    }
  }

  private markEnded(why: string): void {
    if (this.endedWhy !== null) return;
    this.endedWhy = why;
    const w = this.waiter;
    this.waiter = null;
    const err = this.lostError();
    w?.reject(err);
    if (!this.closing && !this.byeReceived) this.handlers.onLost?.(this, err);
  }

  /** Send what is queued, close our side, and wait (bounded) for the socket to go away. */
  async close(graceMs = 1_000): Promise<void> {
    this.closing = true;
    if (this.paused) this.socket.resume(); // let the peer's FIN reach us
    if (!this.socket.destroyed) this.socket.end();
    const timer = setTimeout(() => this.socket.destroy(), graceMs);
    timer.unref();
    await this.closed;
    clearTimeout(timer);
  }

  destroy(): void {
    this.closing = true;
    this.socket.destroy();
  }
}

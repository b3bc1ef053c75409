/**
 * Training data with a resumable position. The order of samples is a pure function of (seed, sample index):
 * windows of the training split are shuffled per epoch by a generator seeded with (seed, epoch). So the
 * loader's whole state is the global sample index, resuming at any step gives exactly the batches an
 * uninterrupted run would have seen, and W ranks can split a global batch without changing the order.
 *
 * The held-out split is fixed: the last 10% of the file's tokens, never trained on. Tokens are the file's
 * bytes, or the ids a tokenizer gives for its text (`encode`).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { InvalidArgumentError } from '../checkpoint';
import { Rng } from '../model/random';

/** The demo corpus: data/ beside the sources (train/data.ts), or beside dist/ when compiled (dist/train/data.js). */
export const DEFAULT_DATA =
  [
    join(__dirname, '..', 'data', 'tiny-corpus.txt'),
    join(__dirname, '..', '..', 'data', 'tiny-corpus.txt'),
  ].find((p) => existsSync(p)) ?? join(__dirname, '..', 'data', 'tiny-corpus.txt');
export const HELD_OUT_FRACTION = 0.1;

export interface DataIdentity {
  name: string;
  sha256: string;
  bytes: number;
}

export interface LoaderState {
  /** Global index of the next training sample (window) to serve. */
  sample_index: number;
}

/** Token ids: a file's bytes as they are, or a tokenizer's ids. */
export type TokenIds = Uint8Array | Uint32Array;

export class TextData {
  readonly identity: DataIdentity;
  readonly train: TokenIds;
  readonly heldOut: TokenIds;
  private permutationEpoch = -1;
  private permutation: Uint32Array = new Uint32Array(0);

  constructor(
    bytes: Uint8Array,
    name: string,
    readonly seqLen: number,
    readonly seed: number,
    tokens: TokenIds = bytes,
  ) {
    const cut = Math.floor(tokens.length * (1 - HELD_OUT_FRACTION));
    this.train = tokens.subarray(0, cut);
    this.heldOut = tokens.subarray(cut);
    this.identity = { name, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
    if (this.windowCount() < 1 || this.heldOutWindows().length < 1) {
      throw new InvalidArgumentError(
        `${name}: ${tokens.length} tokens is too small for sequence length ${seqLen} (need a training and a held-out window)`,
        { file: name, field: 'data' },
      );
    }
  }

  /** The file's bytes as tokens, or, with `encode`, the ids it gives for the file's text (UTF-8). */
  static fromFile(
    path: string | undefined,
    seqLen: number,
    seed: number,
    encode?: (text: string) => number[],
  ): TextData {
    const file = path ?? DEFAULT_DATA;
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new InvalidArgumentError(`cannot read training data ${file}: ${(err as Error).message}`, {
        file,
        field: 'data',
      });
    }
    const tokens = encode ? Uint32Array.from(encode(bytes.toString('utf8'))) : bytes;
    return new TextData(bytes, basename(file), seqLen, seed, tokens);
  }

  /** Non-overlapping windows of seqLen + 1 tokens (inputs and next-token targets) in the training split. */
  windowCount(): number {
    return Math.floor((this.train.length - 1) / this.seqLen);
  }

  private windowOrder(epoch: number): Uint32Array {
    if (epoch !== this.permutationEpoch) {
      const n = this.windowCount();
      const perm = new Uint32Array(n);
      for (let i = 0; i < n; i++) perm[i] = i;
      const rng = new Rng(this.seed, `data-epoch-${epoch}`);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.nextU32() % (i + 1);
        const t = perm[i]!;
        perm[i] = perm[j]!;
        perm[j] = t;
      }
      this.permutation = perm;
      this.permutationEpoch = epoch;
    }
    return this.permutation;
  }

  /** Input and target token ids of samples [start, start + count), each seqLen long, row-major. */
  samples(start: number, count: number): { inputs: Int32Array; targets: Int32Array } {
    const T = this.seqLen;
    const inputs = new Int32Array(count * T);
    const targets = new Int32Array(count * T);
    const n = this.windowCount();
    for (let s = 0; s < count; s++) {
      const index = start + s;
      const window = this.windowOrder(Math.floor(index / n))[index % n]!;
      const offset = window * T;
      for (let t = 0; t < T; t++) {
        inputs[s * T + t] = this.train[offset + t]!;
        targets[s * T + t] = this.train[offset + t + 1]!;
      }
    }
    return { inputs, targets };
  }

  /** Offsets of the held-out windows (all of them, in order, at most `limit`). */
  heldOutWindows(limit = 64): number[] {
    const n = Math.min(limit, Math.floor((this.heldOut.length - 1) / this.seqLen));
    return Array.from({ length: n }, (_, i) => i * this.seqLen);
  }

  heldOutBatch(offsets: number[]): { inputs: Int32Array; targets: Int32Array } {
    const T = this.seqLen;
    const inputs = new Int32Array(offsets.length * T);
    const targets = new Int32Array(offsets.length * T);
    offsets.forEach((offset, s) => {
      for (let t = 0; t < T; t++) {
        inputs[s * T + t] = this.heldOut[offset + t]!;
        targets[s * T + t] = this.heldOut[offset + t + 1]!;
      }
    });
    return { inputs, targets };
  }
}

/**
 * Byte-level tokenizer: a token is one UTF-8 byte (ids 0..255), plus one BOS id 256 that marks the start of
 * a document (nanochat prepends BOS to every document). Vocabulary size 257. Nothing to train, nothing to
 * download, any text round-trips.
 *
 * Its identity (kind, vocab size, sha256 of a canonical description) is recorded with checkpoints, so a model
 * is never resumed or evaluated with a tokenizer whose ids mean something else.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { BpeTokenizer } from './bpe';
import { TokenizerMismatchError } from './errors';

export interface TokenizerIdentity {
  kind: 'byte' | 'bpe';
  vocab_size: number;
  /** sha256 (hex) of the canonical JSON description of the id mapping. */
  hash: string;
}

/** What a checkpoint's meta records: the identity, and for a tokenizer read from a file, where it was. */
export type TokenizerRecord = TokenizerIdentity & { path?: string };

/** The byte tokenizer (the default) or nanochat's BPE tokenizer read from a converted file. */
export type Tokenizer = ByteTokenizer | BpeTokenizer;

/** The tokenizer of `file` (a file scripts/nanochat-tokenizer.py wrote), or the byte tokenizer without one. */
export function loadTokenizer(file: string | undefined): Tokenizer {
  return file === undefined ? new ByteTokenizer() : BpeTokenizer.fromFile(file);
}

/** The meta record of a tokenizer: its identity, plus the file's absolute path when there is one. */
export function tokenizerRecord(tokenizer: Tokenizer, file: string | undefined): TokenizerRecord {
  return { ...tokenizer.identity(), ...(file !== undefined ? { path: resolve(file) } : {}) };
}

export const BYTE_VOCAB = 256;
export const BOS_ID = 256;

export class ByteTokenizer {
  readonly kind = 'byte' as const;
  readonly vocabSize = BYTE_VOCAB + 1;
  readonly bos = BOS_ID;

  /** The id mapping, spelled out; its sha256 is the identity hash. Key order is fixed. */
  description(): string {
    return JSON.stringify({ kind: this.kind, encoding: 'utf-8', bytes: BYTE_VOCAB, bos: this.bos });
  }

  identity(): TokenizerIdentity {
    const hash = createHash('sha256').update(this.description()).digest('hex');
    return { kind: this.kind, vocab_size: this.vocabSize, hash };
  }

  /** How many bytes of text a token stands for: 1, and 0 for BOS. */
  byteLength(id: number): number {
    return id === this.bos ? 0 : 1;
  }

  /** UTF-8 bytes of `text`, with the BOS id first when `bos` is set. */
  encode(text: string, options: { bos?: boolean } = {}): number[] {
    const bytes = Buffer.from(text, 'utf8');
    const out: number[] = options.bos ? [this.bos] : [];
    for (const b of bytes) out.push(b);
    return out;
  }

  /**
   * Text for `ids`. BOS ids are dropped; invalid UTF-8 (e.g. a sample cut mid-character) decodes to U+FFFD.
   * Throws RangeError for an id outside the vocabulary.
   */
  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.bos) continue;
      if (!Number.isInteger(id) || id < 0 || id >= BYTE_VOCAB) {
        throw new RangeError(
          `token id ${id} at position ${i} is outside the byte vocabulary (0..${this.bos})`,
        );
      }
      bytes[n++] = id;
    }
    return new TextDecoder('utf-8').decode(bytes.subarray(0, n));
  }
}

/**
 * Checks a recorded identity (e.g. meta.tokenizer read from JSON) against the tokenizer in use. Throws a
 * TokenizerMismatchError whose `field` names the first property that differs (tokenizer.kind,
 * tokenizer.vocab_size, tokenizer.hash), or `tokenizer` when the record is not an object.
 */
export function checkTokenizer(recorded: unknown, tokenizer: Tokenizer | TokenizerIdentity): void {
  const actual = 'identity' in tokenizer ? tokenizer.identity() : tokenizer;
  if (typeof recorded !== 'object' || recorded === null || Array.isArray(recorded)) {
    throw new TokenizerMismatchError(
      `recorded tokenizer identity is not an object: ${JSON.stringify(recorded)}`,
      {
        field: 'tokenizer',
      },
    );
  }
  const rec = recorded as Record<string, unknown>;
  for (const key of ['kind', 'vocab_size', 'hash'] as const) {
    if (rec[key] !== actual[key]) {
      throw new TokenizerMismatchError(
        `tokenizer ${key} differs: recorded ${JSON.stringify(rec[key])}, in use ${JSON.stringify(actual[key])}`,
        { field: `tokenizer.${key}` },
      );
    }
  }
}

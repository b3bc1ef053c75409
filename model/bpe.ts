/**
 * nanochat's BPE tokenizer (trained by rustbpe, encoded by tiktoken), read from the JSON file that
 * scripts/nanochat-tokenizer.py writes from nanochat's tokenizer.pkl: the split pattern, every mergeable
 * token's bytes in rank order (rank = id), and the special tokens. No pickle is ever read here.
 *
 * Encoding is tiktoken's `encode_ordinary`: the text is split by the pattern, each piece's UTF-8 bytes are
 * one token when the vocabulary has them, else merged pairwise from single bytes, always the adjacent pair
 * whose merge has the lowest rank first (the leftmost on a tie). Special tokens are never parsed from text.
 *
 * The pattern is written for Rust's fancy-regex; JavaScript lacks two of its constructs, which are rewritten
 * to equivalents: possessive quantifiers (`?+`, `++`, `*+`: in nanochat's pattern nothing after them can
 * fail in a way that backtracking would rescue, so greedy matches the same), and scoped case folding
 * `(?i:...)` (spelled out per letter). `\s` becomes `\p{White_Space}`, the class Rust means by it (JavaScript's
 * `\s` adds U+FEFF and lacks U+0085). Anything else the rewrite does not know is refused.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../checkpoint/errors';
import type { TokenizerIdentity } from './tokenizer';

export const BPE_FORMAT = 'tiktoken-bpe';

interface BpeFile {
  format: string;
  version: number;
  name?: string;
  pattern: string;
  special_tokens: Record<string, number>;
  bos: string | null;
  ranks: string[];
}

/** Rewrites a fancy-regex split pattern into a JavaScript one (flags `gu`); throws on what it cannot. */
export function patternToJs(pattern: string): RegExp {
  let out = '';
  let inClass = false;
  let fold = 0; // depth inside (?i: ... ): letters are spelled in both cases
  const groups: boolean[] = []; // per open group: whether it is a (?i: group
  let quantified = false; // the last thing written was a quantifier
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    const wasQuantified: boolean = quantified;
    quantified = false;
    if (c === '\\') {
      const next = pattern[i + 1];
      if (next === undefined) throw new Error('the pattern ends in a backslash');
      if (next === 's' || next === 'S') {
        out += next === 's' ? '\\p{White_Space}' : '\\P{White_Space}';
      } else if (next === 'p' || next === 'P') {
        const close = pattern.indexOf('}', i);
        if (pattern[i + 2] !== '{' || close < 0) throw new Error(`unsupported escape at ${i}`);
        out += pattern.slice(i, close + 1);
        i = close;
        continue;
      } else {
        out += c + next;
      }
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      out += fold > 0 && /[a-zA-Z]/.test(c) ? c.toLowerCase() + c.toUpperCase() : c;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
    } else if (c === '(') {
      if (pattern.startsWith('(?i:', i)) {
        groups.push(true);
        fold++;
        out += '(?:';
        i += 3;
        continue;
      }
      if (pattern.startsWith('(?', i) && !/^\(\?[:=!]/.test(pattern.slice(i, i + 3))) {
        throw new Error(`unsupported group at ${i}: ${pattern.slice(i, i + 4)}`);
      }
      groups.push(false);
      out += c;
    } else if (c === ')') {
      if (groups.pop()) fold--;
      out += c;
    } else if (c === '{') {
      const close = pattern.indexOf('}', i);
      if (close < 0 || !/^\{\d+(,\d*)?\}$/.test(pattern.slice(i, close + 1))) {
        throw new Error(`unsupported brace at ${i}`);
      }
      out += pattern.slice(i, close + 1);
      i = close;
      quantified = true;
    } else if (c === '?' || c === '*' || c === '+') {
      // A '+' right after a quantifier makes it possessive: dropped (see above).
      if (!(c === '+' && wasQuantified)) out += c;
      quantified = !wasQuantified;
    } else {
      out += fold > 0 && /[a-zA-Z]/.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c;
    }
  }
  return new RegExp(out, 'gu');
}

export class BpeTokenizer {
  readonly kind = 'bpe' as const;
  readonly vocabSize: number;
  readonly bos: number;
  private readonly ranks = new Map<string, number>();
  private readonly tokens: Buffer[];
  private readonly specials: Map<number, string>;
  private readonly split: RegExp;
  private readonly hash: string;

  private constructor(doc: BpeFile, file: string) {
    const bad = (field: string, why: string) =>
      new InvalidArgumentError(`${file}: ${field} ${why}`, { file, field });
    this.tokens = doc.ranks.map((b64, rank) => {
      if (typeof b64 !== 'string') throw bad(`ranks[${rank}]`, 'must be a base64 string');
      const bytes = Buffer.from(b64, 'base64');
      if (bytes.length === 0 || bytes.toString('base64') !== b64)
        throw bad(`ranks[${rank}]`, 'is not base64 of a token');
      const key = bytes.toString('latin1');
      if (this.ranks.has(key))
        throw bad(`ranks[${rank}]`, `repeats the token of rank ${this.ranks.get(key)}`);
      this.ranks.set(key, rank);
      return bytes;
    });
    for (let b = 0; b < 256; b++) {
      if (!this.ranks.has(String.fromCharCode(b))) throw bad('ranks', `lacks the single byte ${b}`);
    }
    this.specials = new Map();
    for (const [name, id] of Object.entries(doc.special_tokens)) {
      if (!Number.isSafeInteger(id) || id < doc.ranks.length || this.specials.has(id)) {
        throw bad(
          `special_tokens.${name}`,
          `must be a distinct id past the ranks, got ${JSON.stringify(id)}`,
        );
      }
      this.specials.set(id, name);
    }
    this.vocabSize = doc.ranks.length + this.specials.size;
    if (Math.max(doc.ranks.length - 1, ...this.specials.keys()) !== this.vocabSize - 1) {
      throw bad('special_tokens', 'must number the ids right after the ranks, without gaps');
    }
    if (doc.bos === null || doc.special_tokens[doc.bos] === undefined) {
      throw bad('bos', `must name one of the special tokens, got ${JSON.stringify(doc.bos)}`);
    }
    this.bos = doc.special_tokens[doc.bos]!;
    try {
      this.split = patternToJs(doc.pattern);
    } catch (err) {
      throw bad('pattern', `cannot be used: ${(err as Error).message}`);
    }
    this.hash = createHash('sha256')
      .update(JSON.stringify([doc.format, doc.pattern, doc.special_tokens, doc.bos, doc.ranks]))
      .digest('hex');
  }

  /** Reads and validates a converted tokenizer file (typed errors name the file and field; exit 2). */
  static fromFile(file: string): BpeTokenizer {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InvalidArgumentError(`cannot read tokenizer ${file}: ${(err as Error).message}`, {
        file,
        field: 'tokenizer',
      });
    }
    const d = doc as Partial<BpeFile> | null;
    if (!d || typeof d !== 'object' || d.format !== BPE_FORMAT || d.version !== 1) {
      throw new InvalidArgumentError(
        `${file} is not a tokenizer file of format "${BPE_FORMAT}" version 1 (convert it with scripts/nanochat-tokenizer.py)`,
        { file, field: 'format' },
      );
    }
    if (typeof d.pattern !== 'string' || !Array.isArray(d.ranks) || typeof d.special_tokens !== 'object') {
      throw new InvalidArgumentError(`${file}: pattern, ranks and special_tokens are required`, {
        file,
        field: 'ranks',
      });
    }
    return new BpeTokenizer(d as BpeFile, file);
  }

  identity(): TokenizerIdentity {
    return { kind: this.kind, vocab_size: this.vocabSize, hash: this.hash };
  }

  /** tiktoken's encode_ordinary, with the BOS id first when `bos` is set. */
  encode(text: string, options: { bos?: boolean } = {}): number[] {
    const out: number[] = options.bos ? [this.bos] : [];
    for (const match of text.matchAll(this.split)) {
      const piece = Buffer.from(match[0], 'utf8');
      const whole = this.ranks.get(piece.toString('latin1'));
      if (whole !== undefined) out.push(whole);
      else out.push(...this.merge(piece));
    }
    return out;
  }

  /** How many bytes of text a token stands for (0 for a special token): the denominator of bits per byte. */
  byteLength(id: number): number {
    return this.tokens[id]?.length ?? 0;
  }

  /** Text for `ids`: special tokens as their names, invalid UTF-8 as U+FFFD (tiktoken's errors="replace"). */
  decode(ids: ArrayLike<number>): string {
    const parts: Buffer[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const token =
        this.tokens[id] ?? (this.specials.has(id) ? Buffer.from(this.specials.get(id)!, 'utf8') : undefined);
      if (!Number.isInteger(id) || token === undefined) {
        throw new RangeError(
          `token id ${id} at position ${i} is outside the vocabulary (0..${this.vocabSize - 1})`,
        );
      }
      parts.push(token);
    }
    return new TextDecoder('utf-8').decode(Buffer.concat(parts));
  }

  /** Byte-pair merge of one piece: repeatedly join the adjacent pair of lowest rank (leftmost on a tie). */
  private merge(piece: Buffer): number[] {
    // Boundaries of the current parts; part k is piece[starts[k], starts[k + 1]).
    const starts = Array.from({ length: piece.length + 1 }, (_, i) => i);
    const rankOf = (k: number) =>
      k + 2 < starts.length ? this.ranks.get(piece.toString('latin1', starts[k], starts[k + 2])) : undefined;
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let k = 0; k + 2 < starts.length; k++) {
        const r = rankOf(k);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = k;
        }
      }
      if (best < 0) break;
      starts.splice(best + 1, 1);
    }
    const ids: number[] = [];
    for (let k = 0; k + 1 < starts.length; k++) {
      ids.push(this.ranks.get(piece.toString('latin1', starts[k], starts[k + 1]))!);
    }
    return ids;
  }
}

/**
 * The collective cases a rank process runs and the sequential references the test checks them against.
 * Both sides build inputs from the same seeded generator, so no tensor crosses the process boundary: a rank
 * reports the sha256 of each result, and the test compares it with the sha256 of the reference.
 */
import { createHash } from 'node:crypto';

export type Case =
  | { name: string; kind: 'allReduce'; n: number; op: 'sum' | 'mean' }
  | { name: string; kind: 'reduceScatter'; counts: number[] }
  | { name: string; kind: 'allGather'; counts: number[] }
  | { name: string; kind: 'broadcast'; n: number; root: number }
  | { name: string; kind: 'barrier' }
  | { name: string; kind: 'gatherJson'; root: number }
  | { name: string; kind: 'broadcastJson'; root: number };

/** mulberry32: a tiny seeded PRNG, identical in every process. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedOf(name: string, rank: number): number {
  let h = 2166136261;
  for (const ch of `${name}/${rank}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return h >>> 0;
}

/** Values spanning ~12 binary orders of magnitude, so the order of a float32 sum changes its bits. */
export function input(name: string, rank: number, n: number): Float32Array {
  const next = rng(seedOf(name, rank));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() - 0.5) * 2 ** Math.floor(next() * 12 - 6);
  return out;
}

export function evenSplit(n: number, w: number): number[] {
  return Array.from({ length: w }, (_, r) => Math.floor(n / w) + (r < n % w ? 1 : 0));
}

export function cases(w: number): Case[] {
  const out: Case[] = [];
  for (const n of [0, 1, 2, 5, 7, 13, 64, 1000, 10007])
    out.push({ name: `allReduce-sum-${n}`, kind: 'allReduce', n, op: 'sum' });
  for (const n of [7, 10007]) out.push({ name: `allReduce-mean-${n}`, kind: 'allReduce', n, op: 'mean' });
  const splits: Array<[string, number[]]> = [
    ['even-1001', evenSplit(1001, w)],
    ['uneven', Array.from({ length: w }, (_, r) => (r * 7 + 3) % 5)], // 3, 0, 2, 4: a zero slice when w > 1
    ['first-empty', Array.from({ length: w }, (_, r) => (r === 0 ? 0 : 300 + r))],
    ['all-empty', Array.from({ length: w }, () => 0)],
  ];
  for (const [tag, counts] of splits) {
    out.push({ name: `reduceScatter-${tag}`, kind: 'reduceScatter', counts });
    out.push({ name: `allGather-${tag}`, kind: 'allGather', counts });
  }
  for (let root = 0; root < w; root++)
    out.push({ name: `broadcast-root${root}`, kind: 'broadcast', n: 777, root });
  out.push({ name: 'broadcast-empty', kind: 'broadcast', n: 0, root: w - 1 });
  out.push({ name: 'barrier', kind: 'barrier' });
  out.push({ name: 'gatherJson-root0', kind: 'gatherJson', root: 0 });
  out.push({ name: `gatherJson-last`, kind: 'gatherJson', root: w - 1 });
  out.push({ name: 'broadcastJson-last', kind: 'broadcastJson', root: w - 1 });
  return out;
}

export function jsonValue(rank: number): { rank: number; files: Record<string, { bytes: number }> } {
  return { rank, files: { [`optim_rank${rank}`]: { bytes: 100 + rank } } };
}

function offsets(counts: number[]): number[] {
  let o = 0;
  return counts.map((c) => ((o += c), o - c));
}

/** Sum in rank order with float32 rounding at every step: the definition the group must reproduce. */
export function referenceReduce(
  arrays: Float32Array[],
  op: 'sum' | 'mean' = 'sum',
  order?: number[],
): Float32Array {
  const ranks = order ?? arrays.map((_, r) => r);
  const out = Float32Array.from(arrays[ranks[0]!]!);
  for (const q of ranks.slice(1)) {
    const src = arrays[q]!;
    for (let i = 0; i < out.length; i++) out[i] = out[i]! + src[i]!;
  }
  if (op === 'mean') for (let i = 0; i < out.length; i++) out[i] = out[i]! / arrays.length;
  return out;
}

export function sha(arr: Float32Array): string {
  return createHash('sha256')
    .update(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength))
    .digest('hex');
}
export function shaText(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** What rank `rank` of `w` must report for each case (sha256 of the result; JSON results as text). */
export function expected(c: Case, w: number, rank: number): string {
  switch (c.kind) {
    case 'allReduce':
      return sha(referenceReduce(ranksInputs(c.name, w, c.n), c.op));
    case 'reduceScatter': {
      const total = c.counts.reduce((a, b) => a + b, 0);
      const off = offsets(c.counts)[rank]!;
      return sha(referenceReduce(ranksInputs(c.name, w, total)).slice(off, off + c.counts[rank]!));
    }
    case 'allGather': {
      const parts = c.counts.map((n, r) => input(c.name, r, n));
      const out = new Float32Array(c.counts.reduce((a, b) => a + b, 0));
      parts.forEach((p, r) => out.set(p, offsets(c.counts)[r]));
      return sha(out);
    }
    case 'broadcast':
      return sha(input(c.name, c.root, c.n));
    case 'barrier':
      return 'ok';
    case 'gatherJson':
      return shaText(
        JSON.stringify(rank === c.root ? Array.from({ length: w }, (_, r) => jsonValue(r)) : null),
      );
    case 'broadcastJson':
      return shaText(JSON.stringify(jsonValue(c.root)));
  }
}

export function ranksInputs(name: string, w: number, n: number): Float32Array[] {
  return Array.from({ length: w }, (_, r) => input(name, r, n));
}

/**
 * A small seeded PRNG for weight initialisation, independent of tfjs's global RNG and of the backend, so the
 * same (seed, parameter name) gives the same bits everywhere. Each parameter gets its own stream derived from
 * its name, so adding or reordering parameters never changes the values of the others.
 */

/** 32-bit FNV-1a over the UTF-16 code units of a string, continued from `h`. */
function fnv1a(text: string, h = 0x811c9dc5): number {
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** sfc32 (Chris Doty-Humphrey's small fast counter): good statistical quality, 32-bit integer ops only. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number, stream: string) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    this.a = fnv1a(`${stream}#a`, lo ^ 0x9e3779b9);
    this.b = fnv1a(`${stream}#b`, hi ^ 0x85ebca6b);
    this.c = fnv1a(`${stream}#c`, (lo + hi) >>> 0);
    // Warm up so that similar seeds decorrelate.
    for (let i = 0; i < 16; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in (0, 1): never exactly 0, so log() below is safe. */
  uniform(): number {
    return (this.nextU32() + 0.5) / 2 ** 32;
  }

  /** Standard normal by Box-Muller (V8's Math.log/cos are fdlibm ports: the same bits on every platform). */
  normal(): number {
    return Math.sqrt(-2 * Math.log(this.uniform())) * Math.cos(2 * Math.PI * this.uniform());
  }
}

export function uniformArray(rng: Rng, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.uniform() - 1) * bound;
  return out;
}

export function normalArray(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

/**
 * Shared pieces of the fault campaigns (npm run fault:*): a seeded PRNG, a time budget, the summary table
 * and the exit status. Every campaign is seeded (FAULT_SEED overrides the default), bounded in count and in
 * time (FAULT_BUDGET_S), and exits non-zero when a goal is missed.
 */
import { CheckpointError } from '../../checkpoint';

/** mulberry32: small, fast, and the same sequence on every platform. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${v}`);
  return n;
}

export const SEED = envInt('FAULT_SEED', 20240611);

/** A wall-clock budget: campaigns stop starting new trials once it is spent and report it. */
export class Budget {
  private readonly t0 = Date.now();
  constructor(readonly seconds: number) {}
  get spent(): boolean {
    return Date.now() - this.t0 > this.seconds * 1000;
  }
  get elapsedS(): number {
    return (Date.now() - this.t0) / 1000;
  }
}

export interface Goal {
  what: string;
  value: string | number;
  goal: string;
  ok: boolean;
}

/** Prints the summary table and sets the exit status: 1 when any goal is missed. */
export function report(title: string, goals: Goal[], notes: string[] = []): void {
  const rows = goals.map((g) => [g.what, String(g.value), g.goal, g.ok ? 'ok' : 'MISSED']);
  const head = ['measure', 'value', 'goal', 'result'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  const out = [
    '',
    `## ${title}`,
    '',
    line(head),
    '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|',
    ...rows.map(line),
    ...notes.map((n) => `\n${n}`),
    '',
  ];
  process.stdout.write(out.join('\n') + '\n');
  const missed = goals.filter((g) => !g.ok);
  if (missed.length > 0) {
    process.stdout.write(`FAILED: ${missed.map((g) => g.what).join('; ')}\n`);
    process.exitCode = 1;
  } else {
    process.stdout.write('PASSED\n');
  }
}

export const isTyped = (err: unknown): err is CheckpointError => err instanceof CheckpointError;

export function describe(err: unknown): string {
  return err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err);
}

/** Up to `n` distinct examples per key, for the report. */
export class Examples {
  private readonly by = new Map<string, string[]>();
  constructor(private readonly n = 3) {}
  add(key: string, example: string): void {
    const list = this.by.get(key) ?? [];
    if (list.length < this.n) list.push(example.slice(0, 300));
    this.by.set(key, list);
  }
  lines(): string[] {
    return [...this.by].flatMap(([k, v]) => [`${k}:`, ...v.map((e) => `  - ${e}`)]);
  }
  get size(): number {
    return this.by.size;
  }
}

/** A count whose goal is zero. */
export const zeroGoal = (what: string, value: number, shown: string | number = value): Goal => ({
  what,
  value: shown,
  goal: '0',
  ok: value === 0,
});

export interface RunOutcome {
  completed: boolean;
  bitwise: boolean;
  torn: number;
  retries: number;
}

/**
 * The goals of a pipeline campaign's group of runs: all of at least `want` completed, final files bitwise
 * equal, none torn, then `extra`, and the segment retries counted.
 */
export function runGoals(label: string, runs: RunOutcome[], want: number, extra: Goal[] = []): Goal[] {
  return [
    {
      what: `${label}: runs completed`,
      value: `${runs.filter((r) => r.completed).length}/${runs.length}`,
      goal: `all of ≥ ${want}`,
      ok: runs.length >= want && runs.every((r) => r.completed),
    },
    {
      what: `${label}: final weights bitwise equal`,
      value: `${runs.filter((r) => r.bitwise).length}/${runs.length}`,
      goal: 'all',
      ok: runs.every((r) => r.bitwise),
    },
    zeroGoal(
      `${label}: torn checkpoints`,
      runs.reduce((a, r) => a + r.torn, 0),
    ),
    ...extra,
    {
      what: `${label}: segment retries (sum)`,
      value: runs.reduce((a, r) => a + r.retries, 0),
      goal: '(counted)',
      ok: true,
    },
  ];
}

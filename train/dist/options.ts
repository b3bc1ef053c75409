/**
 * Options of a process group, checked up front (a misconfigured job fails before it touches the network),
 * and the torchrun-style environment they can come from.
 */
import { RendezvousError } from './errors';
import { MAX_FRAME_BYTES } from './framing';

export interface ProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Time limit of each collective, from when it starts running (default 60 s). */
  timeoutMs?: number;
  /** How long the ranks may take to find each other, rank 0 included (default 60 s). */
  connectTimeoutMs?: number;
  /** Floats per frame (default 1 Mi = 4 MiB). Every rank must use the same value. */
  chunkElements?: number;
}

/** Split n elements over w ranks: the first n % w ranks get one more. */
export function evenCounts(n: number, w: number): number[] {
  return Array.from({ length: w }, (_, r) => Math.floor(n / w) + (r < n % w ? 1 : 0));
}

/** Options from the torchrun-style environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): ProcessGroupOptions {
  if (env.RANK === undefined && env.WORLD_SIZE === undefined) {
    return {
      rank: 0,
      worldSize: 1,
      masterAddr: env.MASTER_ADDR ?? '127.0.0.1',
      masterPort: Number(env.MASTER_PORT ?? 0),
    };
  }
  const need = (name: string): string => {
    const v = env[name];
    if (v === undefined || v === '')
      throw new RendezvousError('invalid-options', `${name} is not set (RANK and WORLD_SIZE are)`);
    return v;
  };
  const worldSize = Number(need('WORLD_SIZE'));
  return {
    rank: Number(need('RANK')),
    worldSize,
    masterAddr: worldSize > 1 ? need('MASTER_ADDR') : (env.MASTER_ADDR ?? '127.0.0.1'),
    masterPort: worldSize > 1 ? Number(need('MASTER_PORT')) : 0,
  };
}

export function checkOptions(o: ProcessGroupOptions): Required<ProcessGroupOptions> {
  const bad = (m: string) => new RendezvousError('invalid-options', m);
  if (!Number.isSafeInteger(o.worldSize) || o.worldSize < 1)
    throw bad(`world size must be a positive integer, got ${o.worldSize}`);
  if (o.worldSize > 255)
    throw bad(`world size ${o.worldSize} is more than this full-mesh group supports (255)`);
  if (!Number.isSafeInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) {
    throw bad(`rank must be an integer in [0, ${o.worldSize}), got ${o.rank}`);
  }
  if (o.worldSize > 1) {
    if (!o.masterAddr) throw bad('master address is empty');
    if (!Number.isInteger(o.masterPort) || o.masterPort < 1 || o.masterPort > 65535)
      throw bad(`master port must be in 1..65535, got ${o.masterPort}`);
  }
  const positive = (v: number | undefined, d: number, name: string) => {
    const x = v ?? d;
    if (!Number.isFinite(x) || x <= 0) throw bad(`${name} must be a positive number, got ${x}`);
    return x;
  };
  const chunk = positive(o.chunkElements, 1 << 20, 'chunkElements');
  if (!Number.isInteger(chunk) || chunk * 4 > MAX_FRAME_BYTES)
    throw bad(`chunkElements must be an integer up to ${MAX_FRAME_BYTES / 4}`);
  return {
    ...o,
    timeoutMs: positive(o.timeoutMs, 60_000, 'timeoutMs'),
    connectTimeoutMs: positive(o.connectTimeoutMs, 60_000, 'connectTimeoutMs'),
    chunkElements: chunk,
  };
}

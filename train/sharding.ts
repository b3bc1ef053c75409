/**
 * ZeRO-1 sharding of the optimizer: every parameter is owned by exactly one rank, which keeps its AdamW
 * state and updates it. Ownership is a pure function of (parameter names and sizes, world size), so every
 * rank computes the same map, it is recorded in meta, and a checkpoint saved with W ranks can be
 * re-partitioned for W′ ranks (resharding) by recomputing the map and moving each parameter's state.
 */
import { InvalidArgumentError, type NamedTensors } from '../checkpoint';
import { expAvgKey, expAvgSqKey, STEP_KEY } from '../model/adamw';

export interface ShardPlan {
  worldSize: number;
  /** Parameter name → owning rank. */
  owners: Record<string, number>;
  /** Parameter names in model order, grouped by owner: the flat layout of reduce-scatter and all-gather. */
  layout: string[];
  /** Elements per rank in that layout (the counts of the collectives). */
  counts: number[];
  /** Offset of each parameter in the flat layout. */
  offsets: Record<string, number>;
}

/**
 * Greedy balance: parameters in model order, each to the rank with the fewest elements so far (ties to the
 * lower rank). Deterministic, and whole tensors only, so a parameter's state never spans ranks.
 */
export function planShards(sizes: Array<[string, number]>, worldSize: number): ShardPlan {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) {
    throw new InvalidArgumentError(`world size must be a positive integer, got ${worldSize}`, {
      field: 'worldSize',
    });
  }
  const load = new Array<number>(worldSize).fill(0);
  const owners: Record<string, number> = {};
  for (const [name, size] of sizes) {
    let best = 0;
    for (let r = 1; r < worldSize; r++) if (load[r]! < load[best]!) best = r;
    owners[name] = best;
    load[best]! += size;
  }
  const layout: string[] = [];
  for (let r = 0; r < worldSize; r++) for (const [name] of sizes) if (owners[name] === r) layout.push(name);
  const sizeOf = new Map(sizes);
  const offsets: Record<string, number> = {};
  let offset = 0;
  for (const name of layout) {
    offsets[name] = offset;
    offset += sizeOf.get(name)!;
  }
  return { worldSize, owners, layout, counts: load, offsets };
}

export function ownedBy(plan: ShardPlan, rank: number): string[] {
  return plan.layout.filter((name) => plan.owners[name] === rank);
}

/**
 * Re-partition optimizer state saved as `shards` (one NamedTensors per old rank) for `rank` of a new plan:
 * every parameter's moments come from whichever old shard held them; the step counter must agree.
 */
export function reshardOptimizer(shards: NamedTensors[], plan: ShardPlan, rank: number): NamedTensors {
  const union: NamedTensors = {};
  let step: NamedTensors[string] | undefined;
  shards.forEach((shard, oldRank) => {
    for (const [key, tensor] of Object.entries(shard)) {
      if (key === STEP_KEY) {
        if (step && Buffer.compare(Buffer.from(bytes(step)), Buffer.from(bytes(tensor))) !== 0) {
          throw new InvalidArgumentError(
            `optimizer shard of rank ${oldRank} has a different step counter than rank 0`,
            {
              field: STEP_KEY,
            },
          );
        }
        step = tensor;
        continue;
      }
      if (union[key])
        throw new InvalidArgumentError(`optimizer state "${key}" appears in two shards`, { field: key });
      union[key] = tensor;
    }
  });
  if (!step) throw new InvalidArgumentError('optimizer shards carry no step counter', { field: STEP_KEY });
  const out: NamedTensors = { [STEP_KEY]: step };
  for (const name of ownedBy(plan, rank)) {
    for (const key of [expAvgKey(name), expAvgSqKey(name)]) {
      const tensor = union[key];
      if (!tensor)
        throw new InvalidArgumentError(`no saved optimizer state "${key}" in any shard`, { field: key });
      out[key] = tensor;
    }
  }
  return out;
}

function bytes(t: NamedTensors[string]): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

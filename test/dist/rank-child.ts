/**
 * One rank of a multi-process test job. Reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (plus PG_* knobs)
 * from its environment, runs one scenario, and reports JSON lines on stdout. It never calls process.exit:
 * the test checks that the process ends by itself once the group is closed (no dangling handles).
 * Usage: rank-child.ts suite|large|loop|stall|checkpoint|join
 */
import { LocalStore, saveCheckpoint, f32Tensor, type ByteSource, type PutOptions } from '../../checkpoint';
import { fromEnv, type ProcessGroup } from '../../train/dist';
import { cases, input, jsonValue, sha, shaText } from './cases';
import { tinyMeta, tinyModel } from '../helpers/fixtures';

const scenario = process.argv[2] ?? 'suite';
const env = process.env;
const num = (name: string, d: number) => (env[name] ? Number(env[name]) : d);

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describe(err: unknown): Record<string, unknown> {
  const e = err as Error & Record<string, unknown>;
  const cause = e.cause as Error | undefined;
  return {
    name: e.name,
    message: e.message,
    reason: e.reason,
    peer: e.peer,
    waitingFor: e.waitingFor,
    exitCode: e.exitCode,
    cause: cause?.name,
  };
}

async function suite(pg: ProcessGroup): Promise<void> {
  const W = pg.worldSize;
  const r = pg.rank;
  for (const c of cases(W)) {
    let result: string;
    switch (c.kind) {
      case 'allReduce': {
        const data = input(c.name, r, c.n);
        const out = await pg.allReduce(data, c.op);
        if (out !== data) throw new Error('allReduce must work in place');
        result = sha(out);
        break;
      }
      case 'reduceScatter': {
        const total = c.counts.reduce((a, b) => a + b, 0);
        result = sha(await pg.reduceScatter(input(c.name, r, total), c.counts));
        break;
      }
      case 'allGather':
        result = sha(await pg.allGather(input(c.name, r, c.counts[r]!), c.counts));
        break;
      case 'broadcast': {
        // Non-roots start with garbage of the right length; it must be overwritten.
        const data = r === c.root ? input(c.name, r, c.n) : new Float32Array(c.n).fill(-1);
        result = sha(await pg.broadcast(data, c.root));
        break;
      }
      case 'barrier':
        for (let i = 0; i < 3; i++) await pg.barrier();
        result = 'ok';
        break;
      case 'gatherJson':
        result = shaText(JSON.stringify(await pg.gatherJson(jsonValue(r), c.root)));
        break;
      case 'broadcastJson':
        result = shaText(JSON.stringify(await pg.broadcastJson(r === c.root ? jsonValue(r) : null, c.root)));
        break;
    }
    emit({ type: 'case', name: c.name, result });
  }
}

async function large(pg: ProcessGroup): Promise<void> {
  const n = num('PG_N', 8 << 20);
  const data = input('large', pg.rank, n);
  const t0 = Date.now();
  await pg.allReduce(data);
  emit({ type: 'large', n, sha: sha(data), ms: Date.now() - t0 });
}

/** allReduce over and over until the test kills a rank; the survivors report how they failed. */
async function loop(pg: ProcessGroup): Promise<void> {
  const data = new Float32Array(num('PG_N', 1 << 20)).fill(1);
  for (let i = 0; i < 10_000; i++) {
    emit({ type: 'iter', i });
    const t0 = Date.now();
    try {
      await pg.allReduce(data);
    } catch (err) {
      emit({ type: 'failed', ms: Date.now() - t0, ...describe(err) });
      await after(pg);
      return;
    }
  }
}

/** One rank stays silent past the timeout; the others must time out, and the silent one must learn of it. */
async function stall(pg: ProcessGroup): Promise<void> {
  await pg.barrier();
  if (pg.rank === num('PG_STALL_RANK', 1))
    await new Promise((res) => setTimeout(res, num('PG_STALL_MS', 3000)));
  const t0 = Date.now();
  try {
    await pg.allReduce(input('stall', pg.rank, 1000));
    emit({ type: 'ok' });
  } catch (err) {
    emit({ type: 'failed', ms: Date.now() - t0, ...describe(err) });
    await after(pg);
  }
}

/** After a failure: a later call must reject at once, and close() must let the process exit. */
async function after(pg: ProcessGroup): Promise<void> {
  const t1 = Date.now();
  try {
    await pg.barrier();
    emit({ type: 'after', name: 'none' });
  } catch (err) {
    emit({ type: 'after', ms: Date.now() - t1, ...describe(err) });
  }
  await pg.close();
  process.exitCode = 1;
}

/** A LocalStore that reports every key it writes, to prove no store-polling records were used. */
class RecordingStore extends LocalStore {
  readonly puts: string[] = [];
  override async put(key: string, source: ByteSource, options?: PutOptions) {
    this.puts.push(key);
    return super.put(key, source, options);
  }
}

async function checkpoint(pg: ProcessGroup): Promise<void> {
  const store = new RecordingStore(env.PG_DIR!);
  for (const step of [10, 20]) {
    const optimizer = { 'w.exp_avg': f32Tensor([3], [step, pg.rank, 0.5]) };
    const res = await saveCheckpoint(
      store,
      step,
      { model: pg.rank === 0 ? tinyModel(step) : undefined, optimizer, meta: tinyMeta({ step_note: step }) },
      // A commit timeout of 1 ms would fail any store-polling wait at once: the gather must carry the commit.
      { rank: pg.rank, worldSize: pg.worldSize, coordinator: pg.coordinator(), commitTimeoutMs: 1 },
    );
    emit({ type: 'saved', step, committed: res.committed, files: Object.keys(res.files) });
  }
  emit({ type: 'puts', puts: store.puts });
}

async function main(): Promise<void> {
  // Start late on purpose (PG_START_DELAY_MS), e.g. so a misconfigured rank joins after the good ones.
  await new Promise((res) => setTimeout(res, num('PG_START_DELAY_MS', 0)));
  const t0 = Date.now();
  let pg: ProcessGroup;
  try {
    pg = await fromEnv({
      timeoutMs: num('PG_TIMEOUT_MS', 20_000),
      connectTimeoutMs: num('PG_CONNECT_TIMEOUT_MS', 20_000),
      chunkElements: env.PG_CHUNK ? Number(env.PG_CHUNK) : undefined,
    });
  } catch (err) {
    emit({ type: 'init-failed', ms: Date.now() - t0, ...describe(err) });
    process.exitCode = (err as { exitCode?: number }).exitCode ?? 3;
    return;
  }
  emit({ type: 'ready', rank: pg.rank, worldSize: pg.worldSize });
  if (scenario === 'suite') await suite(pg);
  else if (scenario === 'large') await large(pg);
  else if (scenario === 'loop') return loop(pg);
  else if (scenario === 'stall') return stall(pg);
  else if (scenario === 'checkpoint') await checkpoint(pg);
  else if (scenario === 'join') await pg.barrier();
  else throw new Error(`unknown scenario ${scenario}`);
  await pg.close();
  emit({ type: 'closed' });
}

main().catch((err) => {
  emit({ type: 'crashed', ...describe(err), stack: (err as Error).stack });
  process.exitCode = 3;
});

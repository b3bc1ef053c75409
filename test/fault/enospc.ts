/**
 * Campaign 5: disk full during a save.
 *  A. injected: a LocalStore subclass whose writes fail with ENOSPC once N bytes have been written (N drawn
 *     at random over the size of a save), so the failure lands in every put (model, meta, optimizer,
 *     manifest) at random offsets;
 *  B. real: a 4 MiB tmpfs (needs root and mount; reported as not run otherwise), filled with a filler file
 *     of random size so that the real ENOSPC lands at random points of the save.
 * After each failure: the error is a StoreError with code ENOSPC whose message says "disk full", step 20 is
 * not committed, no temp file is left, step 10 is still the last step and verifies; then space returns and
 * the same step is saved again successfully.
 * Usage: npm run fault:enospc   (FAULT_SEED, FAULT_ENOSPC_TRIALS)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  configureLogging,
  findLastStep,
  listCheckpoints,
  loadCheckpoint,
  LocalStore,
  saveCheckpoint,
  StoreError,
  verifyCheckpoint,
  type ByteSource,
  type PutOptions,
  type Store,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { Budget, describe, envInt, Examples, report, Rng, SEED, type Goal } from './lib';

const TRIALS = envInt('FAULT_ENOSPC_TRIALS', 40);
const budget = new Budget(envInt('FAULT_BUDGET_S', 300));
const rng = new Rng(SEED);

function enospc(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('ENOSPC: no space left on device, write');
  err.code = 'ENOSPC';
  err.errno = -28;
  err.syscall = 'write';
  return err;
}

/** Fails the write that would take the store past `capacity` bytes, after writing what still fits. */
class FullDiskStore extends LocalStore {
  constructor(
    root: string,
    private readonly state: { capacity: number; written: number },
  ) {
    super(root);
  }
  override async put(key: string, source: ByteSource, options?: PutOptions) {
    const state = this.state;
    const chunks = source instanceof Uint8Array ? [source] : source;
    async function* limited(): AsyncIterable<Uint8Array> {
      for await (const chunk of chunks as AsyncIterable<Uint8Array>) {
        const room = state.capacity - state.written;
        if (chunk.byteLength > room) {
          if (room > 0) {
            state.written += room;
            yield chunk.subarray(0, room);
          }
          throw enospc();
        }
        state.written += chunk.byteLength;
        yield chunk;
      }
    }
    return super.put(key, limited(), options);
  }
  override sub(prefix: string): Store {
    return new FullDiskStore(`${this.location}/${prefix}`, this.state);
  }
}

const data = (seed: number, size: number) => ({
  model: tinyModel(seed, size),
  optimizer: tinyOptimizer(seed),
  meta: tinyMeta({ seed }),
});

interface Tally {
  trials: number;
  failed: number;
  clearError: number;
  notCommitted: number;
  noTemp: number;
  previousIntact: number;
  resaved: number;
  completedAnyway: number;
}
const tally = (): Tally => ({
  trials: 0,
  failed: 0,
  clearError: 0,
  notCommitted: 0,
  noTemp: 0,
  previousIntact: 0,
  resaved: 0,
  completedAnyway: 0,
});

/** The checks after a save that may have hit ENOSPC; `freeSpace` gives the space back. */
async function check(
  t: Tally,
  ex: Examples,
  label: string,
  dir: string,
  save: () => Promise<unknown>,
  freeSpace: () => void,
  size: number,
) {
  t.trials++;
  let error: unknown;
  try {
    await save();
  } catch (err) {
    error = err;
  }
  if (!error) {
    t.completedAnyway++;
    freeSpace();
    return;
  }
  t.failed++;
  if (error instanceof StoreError && error.code === 'ENOSPC' && /disk full/.test(error.message))
    t.clearError++;
  else ex.add('unclear error', `${label}: ${describe(error)} code=${(error as StoreError).code}`);
  const committed = (await listCheckpoints(dir)).filter((c) => c.committed).map((c) => c.step);
  if (committed.join() === '10') t.notCommitted++;
  else ex.add('committed after ENOSPC', `${label}: ${committed.join()}`);
  const temps = readdirSync(dir).filter((f) => f.startsWith('.tmp-'));
  if (temps.length === 0) t.noTemp++;
  else ex.add('temp file left behind', `${label}: ${temps.join(', ')}`);
  try {
    if (
      (await findLastStep(dir)) === 10 &&
      (await verifyCheckpoint(dir, 10)).ok &&
      (await loadCheckpoint(dir, 10)).step === 10
    )
      t.previousIntact++;
    else ex.add('previous checkpoint not intact', label);
  } catch (err) {
    ex.add('previous checkpoint not intact', `${label}: ${describe(err)}`);
  }
  freeSpace();
  try {
    await saveCheckpoint(dir, 20, data(2, size));
    if ((await findLastStep(dir)) === 20 && (await verifyCheckpoint(dir, 20)).ok) t.resaved++;
    else ex.add('re-save did not verify', label);
  } catch (err) {
    ex.add('re-save after space returned failed', `${label}: ${describe(err)}`);
  }
}

function sh(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

async function main() {
  configureLogging({ level: 'error' });
  const root = mkdtempSync(join(tmpdir(), 'ckpt-fault-enospc-'));
  const exA = new Examples();
  const exB = new Examples();
  const a = tally();
  const b = tally();
  const SIZE_A = 2048;
  // A: a full save of step 20 writes about this many bytes; draw N over [0, that].
  {
    const probe = join(root, 'probe');
    await saveCheckpoint(probe, 20, data(2, SIZE_A));
    const total = readdirSync(probe).reduce((s, f) => s + statSync(join(probe, f)).size, 0);
    for (let i = 0; i < TRIALS && !budget.spent; i++) {
      const dir = join(root, `a${i}`);
      await saveCheckpoint(dir, 10, data(1, SIZE_A));
      const capacity = rng.int(total);
      const state = { capacity, written: 0 };
      await check(
        a,
        exA,
        `capacity ${capacity}/${total}`,
        dir,
        () => saveCheckpoint(new FullDiskStore(dir, state), 20, data(2, SIZE_A)),
        () => undefined,
        SIZE_A,
      );
    }
  }
  // B: a real small filesystem.
  let bNote = '';
  const mnt = join(root, 'tmpfs');
  mkdirSync(mnt);
  const mounted = sh('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  if (!mounted.ok) bNote = `B not run: mount -t tmpfs failed (${mounted.out})`;
  else {
    try {
      const SIZE_B = 16384; // model ~0.5 MiB
      for (let i = 0; i < TRIALS && !budget.spent; i++) {
        const dir = join(mnt, 'ck');
        rmSync(dir, { recursive: true, force: true });
        rmSync(join(mnt, 'filler'), { force: true });
        await saveCheckpoint(dir, 10, data(1, SIZE_B));
        const free = Number(sh('df', ['-B1', '--output=avail', mnt]).out.split('\n')[1]);
        // Leave between 0 and ~0.6 MiB free: the save of step 20 needs ~0.5 MiB plus small files.
        const leave = rng.int(600 * 1024);
        const filler = Math.max(0, free - leave);
        try {
          writeFileSync(join(mnt, 'filler'), Buffer.alloc(filler, 1));
        } catch {
          /* the filler itself may not fit to the byte: fine, the disk is then full */
        }
        await check(
          b,
          exB,
          `free ~${leave} bytes`,
          dir,
          () => saveCheckpoint(dir, 20, data(2, SIZE_B)),
          () => rmSync(join(mnt, 'filler'), { force: true }),
          SIZE_B,
        );
      }
    } finally {
      const um = sh('umount', [mnt]);
      if (!um.ok) bNote = `umount ${mnt} failed: ${um.out}`;
    }
  }
  rmSync(root, { recursive: true, force: true });

  const goals = (name: string, t: Tally): Goal[] => [
    { what: `${name}: saves run`, value: t.trials, goal: 'info', ok: true },
    { what: `${name}: saves that hit ENOSPC`, value: t.failed, goal: '> 0', ok: t.failed > 0 },
    {
      what: `${name}: StoreError code ENOSPC, "disk full"`,
      value: t.clearError,
      goal: `${t.failed}`,
      ok: t.clearError === t.failed,
    },
    {
      what: `${name}: nothing committed`,
      value: t.notCommitted,
      goal: `${t.failed}`,
      ok: t.notCommitted === t.failed,
    },
    { what: `${name}: no temp file left`, value: t.noTemp, goal: `${t.failed}`, ok: t.noTemp === t.failed },
    {
      what: `${name}: previous step last, verified, loads`,
      value: t.previousIntact,
      goal: `${t.failed}`,
      ok: t.previousIntact === t.failed,
    },
    {
      what: `${name}: same step saved again after space returned`,
      value: t.resaved,
      goal: `${t.failed}`,
      ok: t.resaved === t.failed,
    },
    { what: `${name}: saves that fit anyway`, value: t.completedAnyway, goal: 'info', ok: true },
  ];
  report(
    `fault:enospc (seed ${SEED}, ${budget.elapsedS.toFixed(1)} s)`,
    [...goals('A injected', a), ...(mounted.ok ? goals('B tmpfs 4 MiB', b) : [])],
    [bNote, ...exA.lines(), ...exB.lines()].filter(Boolean),
  );
}

main().catch((err) => {
  process.stderr.write(`campaign crashed: ${describe(err)}\n${(err as Error).stack ?? ''}\n`);
  process.exit(2);
});

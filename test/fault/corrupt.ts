/**
 * Campaign 2: random byte flips, truncations, extensions and deletions across the files of the newest
 * checkpoint (model, optimizer shard, meta, manifest). For each: verifyCheckpoint must report it,
 * loadCheckpoint must throw a typed CheckpointError, findLastStep must fall back to the previous (intact)
 * step, and nothing may throw an untyped error.
 *
 * A manifest mutation that leaves every integrity-relevant field the same (JSON whitespace, a character of
 * committed_at) cannot be detected without a checksum of the manifest itself; such mutations are counted
 * apart as "neutral" and checked to load the same data, so they cannot hide a wrong load.
 * Usage: npm run fault:corrupt   (FAULT_SEED, FAULT_CORRUPT_TRIALS)
 */
import {
  cpSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  findLastStep,
  loadCheckpoint,
  manifestFile,
  metaFile,
  modelFile,
  optimFile,
  parseManifest,
  saveCheckpoint,
  verifyCheckpoint,
  type Manifest,
} from '../../checkpoint';
import { configureLogging } from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { Budget, describe, envInt, Examples, isTyped, report, Rng, SEED } from './lib';

const TRIALS = envInt('FAULT_CORRUPT_TRIALS', 1200);
const budget = new Budget(envInt('FAULT_BUDGET_S', 240));
const rng = new Rng(SEED);
const OLD = 10;
const NEW = 20;
const FILES = [modelFile(NEW), optimFile(NEW, 0), metaFile(NEW), manifestFile(NEW)];
type Kind = 'flip' | 'truncate' | 'extend' | 'delete' | 'zero-fill';
const KINDS: Kind[] = ['flip', 'flip', 'flip', 'truncate', 'extend', 'delete', 'zero-fill'];

/** What the manifest promises about the data: everything but committed_at. */
const integrityView = (m: Manifest) => ({ ...m, committed_at: undefined });

async function main() {
  configureLogging({ level: 'error' }); // findLastStep warns for every skipped step
  const root = mkdtempSync(join(tmpdir(), 'ckpt-fault-corrupt-'));
  const pristine = join(root, 'pristine');
  await saveCheckpoint(pristine, OLD, {
    model: tinyModel(1, 512),
    optimizer: tinyOptimizer(1),
    meta: tinyMeta(),
  });
  await saveCheckpoint(pristine, NEW, {
    model: tinyModel(2, 512),
    optimizer: tinyOptimizer(2),
    meta: tinyMeta({ seed: 2 }),
  });
  const originalManifest = parseManifest(readFileSync(join(pristine, manifestFile(NEW))), NEW);
  const originalLoad = await loadCheckpoint(pristine, NEW);

  const counts = {
    trials: 0,
    relevant: 0,
    detectedVerify: 0,
    typedLoad: 0,
    fallback: 0,
    neutral: 0,
    neutralSameData: 0,
    untyped: 0,
  };
  const perFile = new Map<string, { n: number; detected: number }>();
  const perKind = new Map<string, number>();
  const examples = new Examples();
  const work = join(root, 'work');
  for (let i = 0; i < TRIALS && !budget.spent; i++) {
    rmSync(work, { recursive: true, force: true });
    cpSync(pristine, work, { recursive: true });
    const file = rng.pick(FILES);
    const path = join(work, file);
    const size = statSync(path).size;
    const kind = rng.pick(KINDS);
    let label = `${kind} ${file}`;
    if (kind === 'delete') unlinkSync(path);
    else if (kind === 'truncate') {
      const to = rng.int(size);
      truncateSync(path, to);
      label += ` to ${to}/${size}`;
    } else if (kind === 'extend') {
      writeFileSync(path, rng.bytes(rng.range(1, 64)), { flag: 'a' });
    } else {
      const bytes = readFileSync(path);
      const at = rng.int(size);
      if (kind === 'flip') bytes[at] = bytes[at]! ^ rng.range(1, 255);
      else bytes.fill(0, at, Math.min(size, at + rng.range(1, 64)));
      if (bytes.equals(readFileSync(join(pristine, file)))) {
        i--; // zero-filling zeros changes nothing: draw again
        continue;
      }
      writeFileSync(path, bytes);
      label += ` at ${at}`;
    }
    counts.trials++;
    perKind.set(kind, (perKind.get(kind) ?? 0) + 1);

    // Is the mutation integrity-relevant? Only a manifest that still parses to the same promise is not.
    let neutral = false;
    if (file === manifestFile(NEW) && kind !== 'delete') {
      try {
        const m = parseManifest(readFileSync(path), NEW);
        neutral = isDeepStrictEqual(integrityView(m), integrityView(originalManifest));
      } catch {
        neutral = false;
      }
    }
    try {
      const v = await verifyCheckpoint(work, NEW);
      let loadTyped = false;
      let loadedSame = false;
      try {
        const loaded = await loadCheckpoint(work, NEW);
        loadedSame =
          isDeepStrictEqual(loaded.model, originalLoad.model) &&
          isDeepStrictEqual(loaded.optimizer, originalLoad.optimizer);
      } catch (err) {
        if (isTyped(err)) loadTyped = true;
        else {
          counts.untyped++;
          examples.add('untyped error from loadCheckpoint', `${label}: ${describe(err)}`);
        }
      }
      const last = await findLastStep(work);
      if (neutral) {
        counts.neutral++;
        if (v.ok && loadedSame && last === NEW) counts.neutralSameData++;
        else examples.add('neutral manifest mutation not loading the same data', label);
        continue;
      }
      counts.relevant++;
      const pf = perFile.get(file) ?? { n: 0, detected: 0 };
      pf.n++;
      if (!v.ok) {
        counts.detectedVerify++;
        pf.detected++;
      } else examples.add('not detected by verifyCheckpoint', label);
      if (loadTyped) counts.typedLoad++;
      else examples.add('loadCheckpoint did not throw a typed error', label);
      if (last === OLD) counts.fallback++;
      else examples.add('findLastStep did not fall back', `${label}: returned ${last}`);
      perFile.set(file, pf);
    } catch (err) {
      counts.untyped++;
      examples.add('untyped error', `${label}: ${describe(err)}`);
    }
  }
  rmSync(root, { recursive: true, force: true });

  const pct = (a: number, b: number) => (b === 0 ? '-' : `${((100 * a) / b).toFixed(2)} %`);
  report(
    `fault:corrupt (seed ${SEED}, ${budget.elapsedS.toFixed(1)} s)`,
    [
      { what: 'mutations applied', value: counts.trials, goal: '>= 1000', ok: counts.trials >= 1000 },
      { what: 'integrity-relevant mutations', value: counts.relevant, goal: 'info', ok: true },
      {
        what: 'detected by verifyCheckpoint',
        value: `${counts.detectedVerify} (${pct(counts.detectedVerify, counts.relevant)})`,
        goal: '100 %',
        ok: counts.detectedVerify === counts.relevant,
      },
      {
        what: 'loadCheckpoint threw a CheckpointError',
        value: `${counts.typedLoad} (${pct(counts.typedLoad, counts.relevant)})`,
        goal: '100 %',
        ok: counts.typedLoad === counts.relevant,
      },
      {
        what: 'findLastStep fell back to the previous step',
        value: `${counts.fallback} (${pct(counts.fallback, counts.relevant)})`,
        goal: '100 %',
        ok: counts.fallback === counts.relevant,
      },
      { what: 'untyped errors (crashes)', value: counts.untyped, goal: '0', ok: counts.untyped === 0 },
      {
        what: 'neutral manifest mutations (whitespace, committed_at)',
        value: counts.neutral,
        goal: 'info',
        ok: true,
      },
      {
        what: '... of which load the same verified data',
        value: counts.neutralSameData,
        goal: 'all',
        ok: counts.neutralSameData === counts.neutral,
      },
    ],
    [
      'per file (detected/relevant): ' + [...perFile].map(([f, p]) => `${f} ${p.detected}/${p.n}`).join(', '),
      'per kind: ' + [...perKind].map(([k, n]) => `${k} ${n}`).join(', '),
      ...examples.lines(),
    ],
  );
}

main().catch((err) => {
  process.stderr.write(`campaign crashed: ${describe(err)}\n${(err as Error).stack ?? ''}\n`);
  process.exit(2);
});

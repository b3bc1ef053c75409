/** `ckpt list | last-step | largest | inspect | verify | prune | gc`: the checkpoint manager's commands. */
import {
  committedSteps,
  findLargestModel,
  findLastStep,
  garbageCollect,
  joinLocation,
  listCheckpoints,
  loadCheckpoint,
  metaFile,
  parseMeta,
  type Store,
  modelFile,
  NoCheckpointError,
  openStore,
  optimFile,
  parseFileName,
  pruneCheckpoints,
  readManifest,
  readSafetensorsHeader,
  type RetentionPolicy,
  validateName,
  validateStep,
  verifyCheckpoint,
} from '../checkpoint';
import { recordedProgram } from '../program/meta';
import { loadConfig, parseDuration, sourceDir } from '../temporal.config';
import {
  type Command,
  expectPositionals,
  flag,
  humanBytes,
  int,
  list as listArg,
  nameArg,
  note,
  out,
  positional,
  step as stepArg,
  str,
  table,
  UsageError,
} from './args';

const listCommand: Command = {
  name: 'list',
  summary: 'List every tag of a source and its checkpoints.',
  usage: 'ckpt list ROOT [--source base] [--json]',
  options: { source: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 1, 'list');
    const root = positional(args, 0, 'ROOT', 'list');
    const source = nameArg(args, 'source') ?? 'base';
    const dir = joinLocation(root, sourceDir(loadConfig(), source));
    const store = openStore(dir);
    const tags = [];
    for (const tag of await store.listDirs()) {
      try {
        validateName(tag, 'tag');
      } catch {
        continue;
      }
      const checkpoints = await listCheckpoints(store.sub(tag));
      if (checkpoints.length > 0)
        tags.push({ tag, program: await programOfTag(store.sub(tag), checkpoints), checkpoints });
    }
    if (flag(args, 'json')) {
      out(JSON.stringify({ root, source, dir, tags }, null, 2));
      return 0;
    }
    if (tags.length === 0) {
      note(`no checkpoints under ${dir}`);
      return 0;
    }
    const rows = [['TAG', 'STEP', 'STATE', 'SIZE', 'PROGRAM', 'METRICS']];
    for (const { tag, program, checkpoints } of tags) {
      for (const c of checkpoints) {
        const metrics = Object.entries(c.metrics ?? {})
          .filter(([k]) => k !== 'step')
          .map(([k, v]) => `${k}=${v}`)
          .join(' ');
        rows.push([
          tag,
          String(c.step),
          c.committed ? 'committed' : 'uncommitted',
          humanBytes(c.bytes),
          program ?? '-',
          metrics,
        ]);
      }
    }
    out(table(rows));
    return 0;
  },
};

/** The program that wrote a tag's newest committed checkpoint ("gpt" for those from before programs). */
async function programOfTag(store: Store, checkpoints: Array<{ step: number; committed: boolean }>) {
  const last = checkpoints.filter((c) => c.committed).at(-1);
  if (!last) return undefined;
  try {
    return recordedProgram(parseMeta(await store.read(metaFile(last.step)), last.step)).name;
  } catch {
    return undefined;
  }
}

const lastStepCommand: Command = {
  name: 'last-step',
  summary:
    'Print the highest committed step whose files verify (corrupt newer steps are skipped, with a warning).',
  usage: 'ckpt last-step DIR            (DIR = ROOT/<source_dir>/<tag>)',
  options: {},
  async run(args) {
    expectPositionals(args, 1, 'last-step');
    out(String(await findLastStep(positional(args, 0, 'DIR', 'last-step'))));
    return 0;
  },
};

const largestCommand: Command = {
  name: 'largest',
  summary: 'Print the largest model tag (d<N> with the highest N, else the most recently modified tag).',
  usage: 'ckpt largest CHECKPOINTS_DIR',
  options: {},
  async run(args) {
    expectPositionals(args, 1, 'largest');
    out(await findLargestModel(positional(args, 0, 'CHECKPOINTS_DIR', 'largest')));
    return 0;
  },
};

const inspectCommand: Command = {
  name: 'inspect',
  summary: 'Show a checkpoint: tensors (name, dtype, shape), meta, and commit/verify status.',
  usage: 'ckpt inspect DIR [--step N] [--json]',
  options: { step: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 1, 'inspect');
    const dir = positional(args, 0, 'DIR', 'inspect');
    const store = openStore(dir);
    const steps = await committedSteps(store);
    const step = stepArg(args) ?? steps[steps.length - 1];
    if (step === undefined) throw new NoCheckpointError(`no committed checkpoints in ${store.location}`);
    const manifest = await readManifest(store, step);
    const verification = await verifyCheckpoint(store, step);
    const { meta } = await loadCheckpoint(store, step, {
      loadModel: false,
      loadOptimizer: false,
      verify: false,
    });
    const files: Record<string, unknown> = {};
    for (const [file, record] of Object.entries(manifest.files)) {
      const kind = parseFileName(file)?.kind;
      const entry: Record<string, unknown> = { ...record };
      if ((kind === 'model' || kind === 'optim') && verification.problems.every((p) => p.file !== file)) {
        const header = await readSafetensorsHeader(store, file);
        entry.tensors = header.tensorInfos.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
      }
      files[file] = entry;
    }
    const program = recordedProgram(meta);
    const result = {
      step,
      program,
      committed: true,
      verified: verification.ok,
      problems: verification.problems,
      world_size: manifest.world_size,
      format_version: manifest.format_version,
      committed_at: manifest.committed_at,
      files,
      meta,
    };
    if (flag(args, 'json')) {
      out(JSON.stringify(result, null, 2));
      return verification.ok ? 0 : 1;
    }
    const lines = [
      `step ${step}  committed  ${verification.ok ? 'verified' : 'CORRUPT'}  world size ${manifest.world_size}  ${humanBytes(verification.bytes)}  program ${program.name} v${program.version}`,
    ];
    for (const p of verification.problems) lines.push(`  problem: ${p.message}`);
    for (const file of [
      modelFile(step),
      ...Array.from({ length: manifest.world_size }, (_, r) => optimFile(step, r)),
    ]) {
      const entry = files[file] as
        { bytes: number; tensors?: Array<{ name: string; dtype: string; shape: number[] }> } | undefined;
      if (!entry) continue;
      lines.push('', `${file}  (${humanBytes(entry.bytes)})`);
      const rows = [['TENSOR', 'DTYPE', 'SHAPE']];
      for (const t of entry.tensors ?? []) rows.push([t.name, t.dtype, `[${t.shape.join(', ')}]`]);
      lines.push(table(rows).replace(/^/gm, '  '));
    }
    lines.push('', 'meta:', JSON.stringify(meta, null, 2).replace(/^/gm, '  '));
    out(lines.join('\n'));
    return verification.ok ? 0 : 1;
  },
};

const verifyCommand: Command = {
  name: 'verify',
  summary: 'Check every file of committed checkpoints against its manifest (size and checksum).',
  usage: 'ckpt verify DIR [--step N]      exit 0 if all match, 1 naming each bad file',
  options: { step: { type: 'string' } },
  async run(args) {
    expectPositionals(args, 1, 'verify');
    const dir = positional(args, 0, 'DIR', 'verify');
    const store = openStore(dir);
    const only = stepArg(args);
    const steps = only !== undefined ? [only] : await committedSteps(store);
    if (only === undefined) {
      const others = (await listCheckpoints(store)).filter((c) => !c.committed);
      const temps = (await store.list()).filter((e) => parseFileName(e.key)?.kind === 'temp');
      for (const c of others)
        note(`ignoring step ${c.step}: not committed (${c.files.join(', ')}); see ckpt gc`);
      if (temps.length > 0) note(`ignoring ${temps.length} temp file(s) of unfinished writes; see ckpt gc`);
      if (steps.length === 0) {
        note(`no committed checkpoints in ${store.location}`);
        return 0;
      }
    }
    let failed = 0;
    for (const s of steps) {
      const result = await verifyCheckpoint(store, s);
      if (result.ok) {
        out(
          `ok      step ${s}  (${Object.keys((await readManifest(store, s)).files).length} files, ${humanBytes(result.bytes)})`,
        );
      } else {
        failed++;
        for (const p of result.problems) out(`FAILED  step ${s}  ${p.file || '(manifest)'}: ${p.message}`);
      }
    }
    return failed === 0 ? 0 : 1;
  },
};

const pruneCommand: Command = {
  name: 'prune',
  summary:
    'Delete checkpoints no retention policy keeps. Always kept: the newest, the newest verified, leased and\n' +
    '(with --keep-best) not-yet-evaluated checkpoints.',
  usage:
    'ckpt prune DIR --keep-last N [--keep-best K --metric M --mode min|max] [--keep-every S] [--pin STEP]...\n' +
    '           [--include-unevaluated] [--dry-run] [--json]',
  options: {
    'keep-last': { type: 'string' },
    'keep-best': { type: 'string' },
    metric: { type: 'string' },
    mode: { type: 'string' },
    'keep-every': { type: 'string' },
    pin: { type: 'string', multiple: true },
    'include-unevaluated': { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(args) {
    expectPositionals(args, 1, 'prune');
    const dir = positional(args, 0, 'DIR', 'prune');
    const policy: RetentionPolicy = {};
    const keepLast = int(args, 'keep-last', 0);
    if (keepLast !== undefined) policy.keepLast = keepLast;
    const keepBest = int(args, 'keep-best', 1);
    if (keepBest !== undefined) {
      const metric = str(args, 'metric');
      const mode = str(args, 'mode') ?? 'min';
      if (!metric) throw new UsageError('prune: --keep-best needs --metric NAME', { field: 'metric' });
      if (mode !== 'min' && mode !== 'max')
        throw new UsageError(`prune: --mode must be min or max, got "${mode}"`);
      policy.keepBest = { k: keepBest, metric, mode, keepUnevaluated: !flag(args, 'include-unevaluated') };
    } else if (str(args, 'metric') || str(args, 'mode')) {
      throw new UsageError('prune: --metric and --mode only apply with --keep-best K');
    }
    const keepEvery = int(args, 'keep-every', 1);
    if (keepEvery !== undefined) policy.keepEvery = keepEvery;
    const pins = listArg(args, 'pin');
    if (pins.length > 0) {
      // validateStep, not Number(): Number("") is 0 and would silently pin step 0.
      policy.pinned = pins.map((p) => {
        try {
          return validateStep(p, '--pin');
        } catch (err) {
          throw new UsageError(`prune: ${(err as Error).message}`, { field: 'pin' });
        }
      });
    }
    if (keepLast === undefined && !policy.keepBest && keepEvery === undefined && pins.length === 0) {
      throw new UsageError(
        'prune: give at least one policy (--keep-last N, --keep-best K, --keep-every S or --pin)',
      );
    }
    const dryRun = flag(args, 'dry-run');
    const result = await pruneCheckpoints(dir, policy, { dryRun });
    if (flag(args, 'json')) {
      out(
        JSON.stringify(
          { dryRun, policy, keep: result.keep, remove: result.remove, deleted: result.deleted },
          null,
          2,
        ),
      );
      return 0;
    }
    const rows = [['STEP', 'ACTION', 'WHY']];
    for (const k of result.keep) rows.push([String(k.step), 'keep', k.reasons.join(', ')]);
    for (const r of result.remove) rows.push([String(r.step), dryRun ? 'would delete' : 'deleted', r.why]);
    rows.splice(1, rows.length - 1, ...rows.slice(1).sort((a, b) => Number(a[0]) - Number(b[0])));
    out(table(rows));
    return 0;
  },
};

const gcCommand: Command = {
  name: 'gc',
  summary:
    'Remove orphan files (steps without a manifest, temp files, expired leases) older than a grace period.',
  usage: 'ckpt gc DIR [--grace D] [--dry-run]      D: e.g. 30m, 1h, 2d, 0 (default 1h or CKPT_GC_GRACE)',
  options: { grace: { type: 'string' }, 'dry-run': { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 1, 'gc');
    const dir = positional(args, 0, 'DIR', 'gc');
    const grace = str(args, 'grace');
    const graceMs = grace !== undefined ? parseDuration(grace, '--grace') : loadConfig().gcGraceMs;
    const dryRun = flag(args, 'dry-run');
    const result = await garbageCollect(dir, { graceMs, dryRun });
    for (const r of result.removed) out(`${dryRun ? 'would remove' : 'removed'}  ${r.file}  (${r.why})`);
    if (result.keptYoung.length > 0) {
      note(
        `kept ${result.keptYoung.length} orphan file(s) younger than the grace period (a save may be running)`,
      );
    }
    if (result.removed.length === 0) note('nothing to collect');
    return 0;
  },
};

export const checkpointCommands: Command[] = [
  listCommand,
  lastStepCommand,
  largestCommand,
  inspectCommand,
  verifyCommand,
  pruneCommand,
  gcCommand,
];

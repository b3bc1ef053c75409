/**
 * The `ckpt` CLI contract, end to end: every command runs as a real process (`node bin/ckpt.js ...`) on
 * fixtures written with saveCheckpoint, and the tests check stdout (only the result), stderr (logs, one-line
 * errors) and exit codes (0 ok, 1 a check failed, 2 bad usage or input).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f32Tensor, saveCheckpoint } from '../../checkpoint';
import { checkpointCommands } from '../../cli/checkpoint-commands';

const REPO = join(__dirname, '..', '..');
const CLI = join(REPO, 'bin', 'ckpt.js');

// The CLI reads CKPT_* settings from the environment; the tests run it with the defaults, except for
// log lines as JSON (one pino record a line) so stderr can be told apart from the one-line errors.
const ENV: NodeJS.ProcessEnv = {
  ...Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith('CKPT_') && k !== 'RANK' && !k.startsWith('NODE_TEST'),
    ),
  ),
  CKPT_LOG_FORMAT: 'json',
};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function ckpt(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: REPO,
      env: ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const show = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;

function expectExit(r: Run, code: number): void {
  assert.equal(r.code, code, show(r));
}

/** stderr lines that are not pino log records (those are JSON objects, one a line). */
function plainStderr(r: Run): string[] {
  return r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

/** Errors are one line on stderr, prefixed, and never carry a stack trace without --debug. */
function expectOneLineError(r: Run, pattern: RegExp): void {
  const lines = plainStderr(r);
  assert.equal(lines.length, 1, `expected one error line\n${show(r)}`);
  assert.match(lines[0]!, /^ckpt: error: /, show(r));
  assert.match(lines[0]!, pattern, show(r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace without --debug\n${show(r)}`);
}

/** pino records written to stderr. */
function logRecords(r: Run): Array<Record<string, unknown>> {
  return r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

// ------------------------------------------------------------------------------------------- fixtures

let tmp: string;
before(async () => {
  tmp = await fs.mkdtemp(join(tmpdir(), 'ckpt-cli-test-'));
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

let dirCount = 0;
async function freshDir(name: string): Promise<string> {
  const dir = join(tmp, `${++dirCount}-${name}`);
  await fs.mkdir(dir, { recursive: true });
  return dir;
}

const MODEL_CONFIG = { n_layer: 2, n_head: 2, n_kv_head: 2, n_embd: 4, window_pattern: 'L' };

async function save(dir: string, step: number, meta: Record<string, unknown> = {}): Promise<void> {
  const result = await saveCheckpoint(dir, step, {
    model: {
      'transformer.wte.weight': f32Tensor(
        [2, 3],
        [1, 2, 3, 4, 5, 6].map((v) => v + step),
      ),
      'lm_head.weight': f32Tensor([3, 2], [0.5, -0.5, 1.5, -1.5, 2.5, -2.5]),
    },
    optimizer: { 'exp_avg.transformer.wte.weight': f32Tensor([2, 3], [0, 0, 0, 1, 1, 1]) },
    meta: { model_config: MODEL_CONFIG, loop_state: { step }, ...meta },
  });
  assert.equal(result.committed, true);
}

async function saveAll(dir: string, steps: number[]): Promise<void> {
  for (const s of steps) await save(dir, s);
}

/** Files of a step that never committed: data written, no manifest (a crashed save). */
async function writeUncommitted(dir: string, step: number): Promise<string[]> {
  const pad = String(step).padStart(6, '0');
  const files = [`model_${pad}.safetensors`, `meta_${pad}.json`];
  await fs.writeFile(join(dir, files[0]!), Buffer.from('half-written model bytes'));
  await fs.writeFile(join(dir, files[1]!), JSON.stringify({ step, world_size: 1, format_version: 1 }));
  return files;
}

async function writeTemp(dir: string): Promise<string> {
  const name = '.tmp-model_000050.safetensors.4242.deadbeef';
  await fs.writeFile(join(dir, name), Buffer.from('partial'));
  return name;
}

async function writeEval(dir: string, step: number, metrics: Record<string, number>): Promise<void> {
  await fs.writeFile(
    join(dir, `eval_${String(step).padStart(6, '0')}.json`),
    JSON.stringify({ step, ...metrics }),
  );
}

async function flipByte(file: string): Promise<void> {
  const bytes = await fs.readFile(file);
  const i = Math.floor(bytes.length / 2);
  bytes[i] = bytes[i]! ^ 0x01;
  await fs.writeFile(file, bytes);
}

async function setMtime(dir: string, ageSeconds: number): Promise<void> {
  const t = new Date(Date.now() - ageSeconds * 1000);
  for (const name of await fs.readdir(dir)) await fs.utimes(join(dir, name), t, t);
}

const ls = async (dir: string) => (await fs.readdir(dir)).sort();

// ---------------------------------------------------------------------------------------------- help

describe('ckpt --help and ckpt CMD --help', () => {
  it('ckpt --help prints every command and exits 0', async () => {
    const r = await ckpt('--help');
    expectExit(r, 0);
    for (const c of checkpointCommands) assert.match(r.stdout, new RegExp(`^  ${c.name} `, 'm'), c.name);
    assert.match(r.stdout, /Exit codes: 0 ok, 1 .*, 2 /);
  });

  it("ckpt CMD --help prints that command's usage, listing every one of its flags, and exits 0", async () => {
    // Commands without flags (last-step, largest) only have --help itself; the others are checked flag by flag.
    const withFlags = checkpointCommands.filter((c) => Object.keys(c.options).length > 0);
    assert.ok(withFlags.length >= 5);
    const runs = await Promise.all(withFlags.map((c) => ckpt(c.name, '--help')));
    withFlags.forEach((c, i) => {
      const r = runs[i]!;
      expectExit(r, 0);
      assert.match(r.stdout, new RegExp(`Usage: ckpt ${c.name}\\b`), show(r));
      for (const flag of Object.keys(c.options)) {
        assert.ok(
          r.stdout.includes(`--${flag}`),
          `ckpt ${c.name} --help does not list --${flag}\n${r.stdout}`,
        );
      }
      assert.equal(plainStderr(r).length, 0, show(r));
    });
  });
});

// ---------------------------------------------------------------------------------------------- list

describe('ckpt list ROOT [--source base] [--json]', () => {
  let root: string;
  before(async () => {
    root = await freshDir('list');
    const d12 = join(root, 'base_checkpoints', 'd12');
    await saveAll(d12, [10, 20, 1234567]);
    await writeEval(d12, 20, { val_bpb: 0.75 });
    await writeUncommitted(d12, 30);
    await saveAll(join(root, 'base_checkpoints', 'd3'), [5]);
    await fs.mkdir(join(root, 'base_checkpoints', 'empty-tag'));
    await saveAll(join(root, 'chatsft_checkpoints', 'd12'), [7]);
  });

  it('--json prints one JSON document with every tag and its checkpoints', async () => {
    const r = await ckpt('list', root, '--json');
    expectExit(r, 0);
    const doc = JSON.parse(r.stdout) as {
      root: string;
      source: string;
      dir: string;
      tags: Array<{
        tag: string;
        checkpoints: Array<{
          step: number;
          committed: boolean;
          files: string[];
          bytes: number;
          metrics?: Record<string, number>;
        }>;
      }>;
    };
    assert.equal(doc.root, root);
    assert.equal(doc.source, 'base');
    assert.equal(doc.dir, join(root, 'base_checkpoints'));
    assert.deepEqual(
      doc.tags.map((t) => t.tag).sort(),
      ['d12', 'd3'],
      'tags with no checkpoint are left out',
    );
    const d12 = doc.tags.find((t) => t.tag === 'd12')!;
    assert.deepEqual(
      d12.checkpoints.map((c) => [c.step, c.committed]),
      [
        [10, true],
        [20, true],
        [30, false],
        [1234567, true],
      ],
    );
    const c20 = d12.checkpoints.find((c) => c.step === 20)!;
    assert.equal(c20.metrics?.val_bpb, 0.75);
    assert.ok(c20.files.includes('manifest_000020.json') && c20.files.includes('eval_000020.json'));
    assert.ok(c20.bytes > 0);
    assert.ok(d12.checkpoints.find((c) => c.step === 1234567)!.files.includes('model_1234567.safetensors'));
  });

  it('--source picks another source directory; the table lists each step for people', async () => {
    const [sft, table] = await Promise.all([
      ckpt('list', root, '--source', 'sft', '--json'),
      ckpt('list', root),
    ]);
    expectExit(sft, 0);
    const doc = JSON.parse(sft.stdout) as {
      source: string;
      dir: string;
      tags: Array<{ tag: string; checkpoints: Array<{ step: number }> }>;
    };
    assert.equal(doc.source, 'sft');
    assert.equal(doc.dir, join(root, 'chatsft_checkpoints'));
    assert.deepEqual(
      doc.tags.map((t) => [t.tag, t.checkpoints.map((c) => c.step)]),
      [['d12', [7]]],
    );

    expectExit(table, 0);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^TAG\s+STEP\s+STATE\s+SIZE/);
    assert.ok(
      lines.some((l) => /^d12\s+1234567\s+committed\b/.test(l)),
      table.stdout,
    );
    assert.ok(
      lines.some((l) => /^d12\s+30\s+uncommitted\b/.test(l)),
      table.stdout,
    );
    assert.ok(
      lines.some((l) => /^d12\s+20\s+committed\s.*val_bpb=0\.75/.test(l)),
      table.stdout,
    );
    assert.ok(
      lines.some((l) => /^d3\s+5\s+committed\b/.test(l)),
      table.stdout,
    );
  });

  it('exits 2 for a traversal source and an unknown source', async () => {
    const [traversal, unknown] = await Promise.all([
      ckpt('list', root, '--source', '../etc'),
      ckpt('list', root, '--source', 'pretrain'),
    ]);
    for (const [r, pattern] of [
      [traversal, /source "\.\.\/etc"/],
      [unknown, /unknown source "pretrain"/],
    ] as const) {
      expectExit(r, 2);
      assert.equal(r.stdout, '');
      expectOneLineError(r, pattern);
    }
  });
});

// ----------------------------------------------------------------------------------------- last-step

describe('ckpt last-step DIR', () => {
  it('prints the bare highest committed step (30, not 000030), ignoring an uncommitted newer step', async () => {
    const dir = join(await freshDir('last-step'), 'base_checkpoints', 'd12');
    await saveAll(dir, [10, 20, 30]);
    await writeUncommitted(dir, 40);
    await writeTemp(dir);
    const r = await ckpt('last-step', dir);
    expectExit(r, 0);
    assert.equal(r.stdout, '30\n');
  });

  it('orders steps numerically past 999999 and prints 1234567', async () => {
    const dir = join(await freshDir('last-step-big'), 'base_checkpoints', 'd12');
    await saveAll(dir, [999999, 1234567, 30]);
    const r = await ckpt('last-step', dir);
    expectExit(r, 0);
    assert.equal(r.stdout, '1234567\n');
  });

  it('exits 1 with one error line when DIR has no committed checkpoint', async () => {
    const dir = await freshDir('last-step-empty');
    await writeUncommitted(dir, 10);
    const r = await ckpt('last-step', dir);
    expectExit(r, 1);
    assert.equal(r.stdout, '');
    expectOneLineError(r, /no committed checkpoints/);
  });
});

// ------------------------------------------------------------------------------------------- largest

describe('ckpt largest CHECKPOINTS_DIR', () => {
  it('prints the d<N> tag with the highest N (numeric, not lexicographic, not newest)', async () => {
    const dir = join(await freshDir('largest'), 'base_checkpoints');
    for (const tag of ['d2', 'd12', 'd3']) await saveAll(join(dir, tag), [10]);
    // d99 has no committed checkpoint: never guessed.
    await fs.mkdir(join(dir, 'd99'));
    await writeUncommitted(join(dir, 'd99'), 10);
    await setMtime(join(dir, 'd12'), 3000);
    await setMtime(join(dir, 'd2'), 2000);
    const r = await ckpt('largest', dir);
    expectExit(r, 0);
    assert.equal(r.stdout, 'd12\n');
  });

  it('without d<N> tags prints the most recently modified tag', async () => {
    const dir = join(await freshDir('largest-mtime'), 'base_checkpoints');
    for (const tag of ['alpha', 'beta', 'gamma']) await saveAll(join(dir, tag), [10]);
    await setMtime(join(dir, 'alpha'), 3000);
    await setMtime(join(dir, 'beta'), 1000);
    await setMtime(join(dir, 'gamma'), 2000);
    const r = await ckpt('largest', dir);
    expectExit(r, 0);
    assert.equal(r.stdout, 'beta\n');
  });
});

// ------------------------------------------------------------------------------------------- inspect

describe('ckpt inspect DIR [--step N] [--json]', () => {
  let dir: string;
  before(async () => {
    dir = join(await freshDir('inspect'), 'base_checkpoints', 'd12');
    await saveAll(dir, [10, 20, 30]);
    await writeUncommitted(dir, 40);
  });

  it('--json parses and lists tensors with dtype and shape, the meta and verified: true (newest step by default)', async () => {
    const newest = await ckpt('inspect', dir, '--json');
    expectExit(newest, 0);
    const doc = JSON.parse(newest.stdout) as {
      step: number;
      committed: boolean;
      verified: boolean;
      problems: unknown[];
      world_size: number;
      files: Record<
        string,
        { bytes: number; crc32: string; tensors?: Array<{ name: string; dtype: string; shape: number[] }> }
      >;
      meta: Record<string, unknown>;
    };
    assert.equal(doc.step, 30);
    assert.equal(doc.committed, true);
    assert.equal(doc.verified, true);
    assert.deepEqual(doc.problems, []);
    assert.equal(doc.world_size, 1);
    assert.deepEqual(Object.keys(doc.files).sort(), [
      'meta_000030.json',
      'model_000030.safetensors',
      'optim_000030_rank0.safetensors',
    ]);
    assert.deepEqual(
      [...doc.files['model_000030.safetensors']!.tensors!].sort((a, b) => (a.name < b.name ? -1 : 1)),
      [
        { name: 'lm_head.weight', dtype: 'F32', shape: [3, 2] },
        { name: 'transformer.wte.weight', dtype: 'F32', shape: [2, 3] },
      ],
    );
    assert.deepEqual(doc.files['optim_000030_rank0.safetensors']!.tensors, [
      { name: 'exp_avg.transformer.wte.weight', dtype: 'F32', shape: [2, 3] },
    ]);
    assert.match(doc.files['meta_000030.json']!.crc32, /^[0-9a-f]{8}$/);
    assert.equal(doc.meta.step, 30);
    assert.deepEqual(doc.meta.loop_state, { step: 30 });
    assert.deepEqual(doc.meta.model_config, MODEL_CONFIG);
  });

  it('prints a table for people', async () => {
    const r = await ckpt('inspect', dir, '--step', '20');
    expectExit(r, 0);
    assert.match(r.stdout, /^step 20\s+committed\s+verified\b/);
    assert.match(r.stdout, /transformer\.wte\.weight\s+F32\s+\[2, 3\]/);
    assert.match(r.stdout, /lm_head\.weight\s+F32\s+\[3, 2\]/);
    assert.match(r.stdout, /meta:/);
  });

  it('exits 2 for a bad --step (-1, 1.5, abc)', async () => {
    const runs = await Promise.all([
      ckpt('inspect', dir, '--step', '-1'),
      ckpt('inspect', dir, '--step', '1.5'),
      ckpt('inspect', dir, '--step', 'abc'),
    ]);
    for (const r of runs) {
      expectExit(r, 2);
      assert.equal(r.stdout, '');
      expectOneLineError(r, /--step/);
    }
  });
});

// -------------------------------------------------------------------------------------------- verify

describe('ckpt verify DIR [--step N]', () => {
  it('verifies every committed checkpoint, ignoring (and mentioning) uncommitted steps and temp files', async () => {
    const dir = join(await freshDir('verify'), 'base_checkpoints', 'd12');
    await saveAll(dir, [10, 20, 30]);
    await writeUncommitted(dir, 40);
    await writeTemp(dir);
    const [all, one] = await Promise.all([ckpt('verify', dir), ckpt('verify', dir, '--step', '20')]);
    expectExit(all, 0);
    const lines = all.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 3, all.stdout);
    for (const [i, s] of [10, 20, 30].entries()) assert.match(lines[i]!, new RegExp(`^ok\\s+step ${s}\\b`));
    assert.doesNotMatch(all.stdout, /40|tmp/);
    assert.match(all.stderr, /step 40/);
    assert.match(all.stderr, /temp file/);

    expectExit(one, 0);
    assert.match(one.stdout, /^ok\s+step 20\b/);
    assert.equal(one.stdout.trimEnd().split('\n').length, 1);
  });

  it('exits 0 when DIR has no checkpoint yet', async () => {
    const r = await ckpt('verify', await freshDir('verify-empty'));
    expectExit(r, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /no committed checkpoints/);
  });
});

describe('a flipped byte in the newest checkpoint', () => {
  let dir: string;
  before(async () => {
    dir = join(await freshDir('corrupt'), 'base_checkpoints', 'd12');
    await saveAll(dir, [10, 20, 30, 1234567]);
  });

  for (const file of ['model_1234567.safetensors', 'optim_1234567_rank0.safetensors', 'meta_1234567.json']) {
    it(`in ${file}: verify exits 1 naming it, last-step falls back to 30`, async () => {
      const path = join(dir, file);
      await flipByte(path);
      try {
        const [verify, last] = await Promise.all([ckpt('verify', dir), ckpt('last-step', dir)]);
        expectExit(verify, 1);
        const failed = verify.stdout.split('\n').filter((l) => l.startsWith('FAILED'));
        assert.equal(failed.length, 1, verify.stdout);
        assert.match(
          failed[0]!,
          new RegExp(`^FAILED\\s+step 1234567\\s+${file.replace(/\./g, '\\.')}: .*crc32`),
        );
        for (const s of [10, 20, 30]) assert.match(verify.stdout, new RegExp(`^ok\\s+step ${s}\\b`, 'm'));

        expectExit(last, 0);
        assert.equal(last.stdout, '30\n');
        const warning = logRecords(last).find(
          (rec) => typeof rec.msg === 'string' && rec.msg.includes('skipping step 1234567'),
        );
        assert.ok(warning, `no warning naming the skipped step\n${last.stderr}`);
        assert.deepEqual(warning.files, [file]);
      } finally {
        await flipByte(path);
      }
    });
  }

  it('inspect --json still prints one document, with verified: false and the problem, and exits 1', async () => {
    const path = join(dir, 'model_1234567.safetensors');
    await flipByte(path);
    try {
      const r = await ckpt('inspect', dir, '--json');
      expectExit(r, 1);
      const doc = JSON.parse(r.stdout) as {
        step: number;
        verified: boolean;
        problems: Array<{ file: string; reason: string }>;
      };
      assert.equal(doc.step, 1234567);
      assert.equal(doc.verified, false);
      assert.deepEqual(
        doc.problems.map((p) => [p.file, p.reason]),
        [['model_1234567.safetensors', 'crc32']],
      );
    } finally {
      await flipByte(path);
    }
  });
});

// --------------------------------------------------------------------------------------------- prune

describe('ckpt prune DIR --keep-last N [--keep-best K --metric M --mode min|max] [--pin STEP]... [--dry-run] [--json]', () => {
  const STEPS = [10, 20, 30, 40, 50, 60];
  const LOSS: Record<number, number> = { 10: 5, 20: 1, 30: 3, 40: 4, 50: 2, 60: 6 };
  const policyArgs = [
    '--keep-last',
    '2',
    '--keep-best',
    '1',
    '--metric',
    'loss',
    '--mode',
    'min',
    '--pin',
    '10',
  ];
  let dir: string;
  let plannedRemovals: number[];

  interface PruneDoc {
    dryRun: boolean;
    keep: Array<{ step: number; reasons: string[] }>;
    remove: Array<{ step: number; why: string }>;
    deleted: number[];
  }

  before(async () => {
    dir = join(await freshDir('prune'), 'base_checkpoints', 'd12');
    await saveAll(dir, STEPS);
    for (const s of STEPS) await writeEval(dir, s, { loss: LOSS[s]! });
  });

  it('--dry-run --json prints the plan and deletes nothing', async () => {
    const before = await ls(dir);
    const r = await ckpt('prune', dir, ...policyArgs, '--dry-run', '--json');
    expectExit(r, 0);
    const doc = JSON.parse(r.stdout) as PruneDoc;
    assert.equal(doc.dryRun, true);
    assert.deepEqual(doc.deleted, []);
    assert.deepEqual(
      doc.keep.map((k) => k.step).sort((a, b) => a - b),
      [10, 20, 50, 60],
    );
    const reasons = Object.fromEntries(doc.keep.map((k) => [k.step, k.reasons]));
    assert.ok(reasons[10]!.includes('pinned'));
    assert.ok(reasons[20]!.includes('keep-best'));
    assert.ok(reasons[50]!.includes('keep-last'));
    assert.ok(reasons[60]!.includes('newest') && reasons[60]!.includes('newest-verified'));
    plannedRemovals = doc.remove.map((x) => x.step).sort((a, b) => a - b);
    assert.deepEqual(plannedRemovals, [30, 40]);
    assert.deepEqual(await ls(dir), before, 'a dry run deleted files');
  });

  it('a real prune deletes exactly what the plan said: manifest, data, meta and eval files', async () => {
    assert.ok(plannedRemovals, 'the dry run test runs first');
    const before = await ls(dir);
    const r = await ckpt('prune', dir, ...policyArgs, '--json');
    expectExit(r, 0);
    const doc = JSON.parse(r.stdout) as PruneDoc;
    assert.equal(doc.dryRun, false);
    assert.deepEqual(
      [...doc.deleted].sort((a, b) => a - b),
      plannedRemovals,
    );
    const gone = plannedRemovals.flatMap((s) => {
      const p = String(s).padStart(6, '0');
      return [
        `manifest_${p}.json`,
        `model_${p}.safetensors`,
        `optim_${p}_rank0.safetensors`,
        `meta_${p}.json`,
        `eval_${p}.json`,
      ];
    });
    for (const f of gone) assert.ok(before.includes(f), `fixture lacks ${f}`);
    // Plus the retention log, which records each deleted step (one JSON line each).
    assert.deepEqual(
      await ls(dir),
      [...before.filter((f) => !gone.includes(f)), 'retention_log.jsonl'].sort(),
    );
    const log = (await fs.readFile(join(dir, 'retention_log.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      log.map((e: { step: number }) => e.step).sort((a: number, b: number) => a - b),
      plannedRemovals,
    );
  });

  it('exits 2 for a bad --pin (1.5, empty), deleting nothing', async () => {
    const before = await ls(dir);
    const runs = await Promise.all([
      ckpt('prune', dir, '--keep-last', '1', '--pin', '1.5'),
      ckpt('prune', dir, '--keep-last', '1', '--pin='),
    ]);
    for (const r of runs) {
      expectExit(r, 2);
      assert.equal(r.stdout, '');
      expectOneLineError(r, /--pin/);
    }
    assert.deepEqual(await ls(dir), before);
  });
});

// ------------------------------------------------------------------------------------------------ gc

describe('ckpt gc DIR [--grace D] [--dry-run]', () => {
  let dir: string;
  let orphans: string[];
  let committedFiles: string[];
  before(async () => {
    dir = join(await freshDir('gc'), 'base_checkpoints', 'd12');
    await saveAll(dir, [10, 20]);
    committedFiles = await ls(dir);
    orphans = [...(await writeUncommitted(dir, 30)), await writeTemp(dir)].sort();
  });

  it('keeps young orphans by default, and --dry-run --grace 0 lists them without removing anything', async () => {
    const young = await ckpt('gc', dir);
    expectExit(young, 0);
    assert.equal(young.stdout, '');
    assert.match(young.stderr, new RegExp(`kept ${orphans.length} orphan file`));

    const dry = await ckpt('gc', dir, '--grace', '0', '--dry-run');
    expectExit(dry, 0);
    const listed = dry.stdout
      .trimEnd()
      .split('\n')
      .map((l) => /^would remove\s+(\S+)/.exec(l)?.[1]);
    assert.deepEqual(listed.sort(), orphans, dry.stdout);
    assert.match(dry.stdout, /step 30 has no manifest/);
    assert.match(dry.stdout, /temp file/);
    assert.deepEqual(await ls(dir), [...committedFiles, ...orphans].sort());
  });

  it('--grace 0 removes the orphan step and the temp file, and leaves committed checkpoints alone', async () => {
    const r = await ckpt('gc', dir, '--grace', '0');
    expectExit(r, 0);
    const removed = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => /^removed\s+(\S+)/.exec(l)?.[1]);
    assert.deepEqual(removed.sort(), orphans, r.stdout);
    assert.deepEqual(await ls(dir), committedFiles);
  });
});

// ----------------------------------------------------------------------------------- usage and errors

describe('bad usage: exit 2, one error line on stderr, nothing on stdout', () => {
  it('unknown command, unknown flag, missing argument', async () => {
    const dir = await freshDir('usage');
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command "frobnicate"/],
      [['verify', dir, '--bogus'], /unknown flag --bogus/],
      [['last-step'], /missing DIR/],
    ];
    const runs = await Promise.all(cases.map(([args]) => ckpt(...args)));
    runs.forEach((r, i) => {
      expectExit(r, 2);
      assert.equal(r.stdout, '', show(r));
      expectOneLineError(r, cases[i]![1]);
    });
  });

  it('--debug adds the stack trace', async () => {
    const r = await ckpt('inspect', await freshDir('debug'), '--step', 'abc', '--debug');
    expectExit(r, 2);
    assert.match(r.stderr, /^ckpt: error: --step must be a non-negative integer/m);
    assert.match(r.stderr, /^\s+at /m);
  });
});

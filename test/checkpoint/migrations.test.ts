/**
 * Checkpoint migrations: each registered one on its own, idempotence, loadCheckpoint applying them and
 * reporting their ids, and the once-per-process log line.
 *
 * logOnce keys are process-global, so the logging test runs this same file again in a child process
 * (MIGRATIONS_LOG_CHILD=1), where nothing has been migrated yet; the child prints what it saw as JSON.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  applyMigrations,
  configureLogging,
  f32Tensor,
  loadCheckpoint,
  type Meta,
  type Migration,
  type NamedTensors,
  registeredMigrations,
  registerMigration,
  saveCheckpoint,
  SchemaError,
  type Tensor,
  verifyCheckpoint,
} from '../../checkpoint';
// The GPT's migrations are registered by its program's module.
import '../../model/migrations';
import { LEGACY_ARCHITECTURE, NANOCHAT_ARCHITECTURE } from '../../model/config';

// In registry order: the core's own first, then the GPT's (registered when its module loads).
const IDS = [
  'strip-wrapper-prefixes',
  'window-pattern-default',
  'n-kv-head-default',
  'architecture-constants',
  'per-layer-scalars',
];
/** program-record applies only to the trainer's own checkpoints (meta with `run`), not to these. */
const REGISTERED = [...IDS, 'program-record'];

function migration(id: string): Migration {
  const m = registeredMigrations().find((x) => x.id === id);
  assert.ok(m, `migration ${id} is not registered`);
  return m;
}

function meta(modelConfig?: Record<string, unknown>, step = 100): Meta {
  const m: Meta = { step, world_size: 1, format_version: 1 };
  if (modelConfig) m.model_config = modelConfig;
  return m;
}

/** A model_config today's code writes: nothing for the meta migrations to add. */
const CURRENT_CONFIG = {
  n_layer: 2,
  n_head: 4,
  n_kv_head: 2,
  n_embd: 8,
  window_pattern: 'SSSL',
  ...NANOCHAT_ARCHITECTURE,
};
/** One written before sliding windows and grouped-query attention. */
const OLD_CONFIG = { n_layer: 2, n_head: 4, n_embd: 8 };

const t = (values: number[]) => f32Tensor([values.length], values);
const values = (tensor: Tensor | undefined) => Array.from(tensor!.data as Float32Array);
const sortedKeys = (tensors: NamedTensors) => Object.keys(tensors).sort();

/** Model tensors of today's format: bare names, per-layer scalars present. */
function currentTensors(): NamedTensors {
  return {
    'transformer.wte.weight': t([1, 2, 3]),
    'lm_head.weight': t([4, 5]),
    resid_lambdas: t([1, 1]),
    x0_lambdas: t([0, 0]),
  };
}

const quiet = { write: (_line: string) => undefined };

// ------------------------------------------------------------------------------------ child process

/** Runs in the child: loads old checkpoints repeatedly and reports every log record. */
async function childMain(): Promise<void> {
  const records: Array<Record<string, unknown>> = [];
  configureLogging({ destination: { write: (line: string) => void records.push(JSON.parse(line)) } });
  const dir = await fs.mkdtemp(join(tmpdir(), 'migrations-child-'));
  try {
    await saveOld(dir, 10);
    await saveOld(dir, 20);
    const beforeLoad = records.length;
    const loads: string[][] = [];
    for (const step of [10, 20, 10]) loads.push((await loadCheckpoint(dir, step)).migrations);
    loads.push(applyMigrations(meta(OLD_CONFIG), { 'module.transformer.x': t([1]) }).applied);
    // A new logger does not reset what was already logged once.
    configureLogging({ destination: { write: (line: string) => void records.push(JSON.parse(line)) } });
    loads.push((await loadCheckpoint(dir, 20)).migrations);
    process.stdout.write(JSON.stringify({ beforeLoad, loads, records }));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function saveOld(dir: string, step: number): Promise<void> {
  await saveCheckpoint(dir, step, {
    model: { '_orig_mod.transformer.wte.weight': t([1, 2, 3]), '_orig_mod.lm_head.weight': t([4, 5]) },
    optimizer: { 'exp_avg.transformer.wte.weight': t([0, 0, 0]) },
    meta: { model_config: { ...OLD_CONFIG } },
  });
}

function runChild(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith('NODE_TEST') && k !== 'RANK' && !k.startsWith('CKPT_'),
    ),
  );
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', __filename], {
      env: { ...env, MIGRATIONS_LOG_CHILD: '1' },
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

// -------------------------------------------------------------------------------------------- tests

function tests(): void {
  // Keep this process's migration log lines out of the test output.
  before(() => configureLogging({ destination: quiet }));

  describe('the registry', () => {
    it('holds the six migrations, in the order they are applied', () => {
      assert.deepEqual(
        registeredMigrations().map((m) => m.id),
        REGISTERED,
      );
      for (const m of registeredMigrations()) assert.ok(m.description.length > 0, m.id);
    });

    it('refuses a second migration with an id already registered', () => {
      assert.throws(
        () =>
          registerMigration({ id: 'window-pattern-default', description: 'again', patchMeta: () => null }),
        /already registered/,
      );
      assert.equal(registeredMigrations().length, REGISTERED.length);
    });
  });

  describe('program-record', () => {
    const m = migration('program-record');
    const legacy = (): Meta => ({
      ...meta({ ...CURRENT_CONFIG }),
      run: {
        model: CURRENT_CONFIG,
        seed: 3,
        batch: 4,
        schedule: { kind: 'cosine', lr: 0.01, warmup: 2, horizon: 50 },
        data: { name: 'corpus.txt', sha256: 'ab', bytes: 10, path: '/data/corpus.txt' },
      },
    });

    it("records a trainer checkpoint from before programs as the GPT's, with its config and loop settings", () => {
      const patched = m.patchMeta!(legacy())!;
      assert.deepEqual(patched.program, { name: 'gpt', version: 1 });
      assert.deepEqual(patched.config, { ...CURRENT_CONFIG, data: '/data/corpus.txt' });
      assert.deepEqual(patched.loop, {
        seed: 3,
        batch: 4,
        schedule: { kind: 'cosine', lr: 0.01, warmup: 2, horizon: 50 },
      });
    });

    it('leaves metas that name a program, and imported ones without trainer settings, alone', () => {
      assert.equal(m.patchMeta!({ ...legacy(), program: { name: 'gpt', version: 1 } }), null);
      assert.equal(m.patchMeta!(meta({ ...CURRENT_CONFIG })), null);
    });

    it("never patches another program's checkpoint", () => {
      const other = { ...legacy(), program: { name: 'mlp', version: 1 }, model_config: { ...OLD_CONFIG } };
      assert.deepEqual(applyMigrations(other, null).applied, []);
    });
  });

  describe('window-pattern-default', () => {
    const m = migration('window-pattern-default');

    it('sets a missing window_pattern to "L" without touching the input meta', () => {
      const input = meta({ ...OLD_CONFIG });
      const patched = m.patchMeta!(input);
      assert.deepEqual(patched, meta({ ...OLD_CONFIG, window_pattern: 'L' }));
      assert.equal(input.model_config!.window_pattern, undefined, 'input meta mutated');
    });

    it('keeps an existing pattern, and leaves a meta without model_config alone', () => {
      assert.equal(m.patchMeta!(meta({ ...CURRENT_CONFIG })), null);
      assert.equal(m.patchMeta!(meta({ ...OLD_CONFIG, window_pattern: '' })), null);
      assert.equal(m.patchMeta!(meta()), null);
    });

    it('is the only one applyMigrations applies to an otherwise current checkpoint', () => {
      const { window_pattern: _, ...config } = CURRENT_CONFIG;
      const result = applyMigrations(meta(config), currentTensors());
      assert.deepEqual(result.applied, ['window-pattern-default']);
      assert.equal(result.meta.model_config!.window_pattern, 'L');
    });
  });

  describe('n-kv-head-default', () => {
    const m = migration('n-kv-head-default');

    it('sets a missing n_kv_head to n_head', () => {
      assert.deepEqual(
        m.patchMeta!(meta({ n_layer: 2, n_head: 6 })),
        meta({ n_layer: 2, n_head: 6, n_kv_head: 6 }),
      );
    });

    it('keeps an existing n_kv_head, and does nothing without a numeric n_head or a model_config', () => {
      assert.equal(m.patchMeta!(meta({ ...CURRENT_CONFIG })), null);
      assert.equal(m.patchMeta!(meta({ n_layer: 2 })), null);
      assert.equal(m.patchMeta!(meta({ n_layer: 2, n_head: '4' })), null);
      assert.equal(m.patchMeta!(meta()), null);
    });

    it('is the only one applyMigrations applies to an otherwise current checkpoint', () => {
      const { n_kv_head: _, ...config } = CURRENT_CONFIG;
      const result = applyMigrations(meta(config), currentTensors());
      assert.deepEqual(result.applied, ['n-kv-head-default']);
      assert.equal(result.meta.model_config!.n_kv_head, CURRENT_CONFIG.n_head);
    });
  });

  describe('strip-wrapper-prefixes', () => {
    const m = migration('strip-wrapper-prefixes');

    it('strips "_orig_mod." and "module." prefixes, nested too, keeping the same tensors', () => {
      const wte = t([1, 2, 3]);
      const head = t([4, 5]);
      const h0 = t([6]);
      const plain = t([7]);
      const tensors: NamedTensors = {
        '_orig_mod.transformer.wte.weight': wte,
        'module.lm_head.weight': head,
        'module._orig_mod.module.transformer.h.0.w': h0,
        'plain.module.weight': plain,
      };
      assert.equal(m.patchTensors!(tensors, meta(CURRENT_CONFIG)), true);
      assert.deepEqual(sortedKeys(tensors), [
        'lm_head.weight',
        'plain.module.weight',
        'transformer.h.0.w',
        'transformer.wte.weight',
      ]);
      assert.equal(tensors['transformer.wte.weight'], wte);
      assert.equal(tensors['lm_head.weight'], head);
      assert.equal(tensors['transformer.h.0.w'], h0);
      assert.equal(tensors['plain.module.weight'], plain);
    });

    it('reports no change for bare names', () => {
      const tensors = currentTensors();
      assert.equal(m.patchTensors!(tensors, meta(CURRENT_CONFIG)), false);
      assert.deepEqual(sortedKeys(tensors), sortedKeys(currentTensors()));
    });

    it('refuses to strip a prefix onto a name that is already present (SchemaError naming both)', () => {
      const cases: NamedTensors[] = [
        { 'lm_head.weight': t([1]), 'module.lm_head.weight': t([2]) },
        { 'module.lm_head.weight': t([1]), '_orig_mod.lm_head.weight': t([2]) },
      ];
      for (const tensors of cases) {
        assert.throws(
          () => m.patchTensors!(tensors, meta(CURRENT_CONFIG)),
          (err: unknown) =>
            err instanceof SchemaError &&
            err.exitCode === 1 &&
            /"(module|_orig_mod)\.lm_head\.weight" and "lm_head\.weight" are both present/.test(err.message),
        );
      }
    });

    it('does not mistake Object.prototype members for present tensors', () => {
      const tensors: NamedTensors = { 'module.constructor': t([1]), 'module.toString': t([2]) };
      assert.equal(m.patchTensors!(tensors, meta(CURRENT_CONFIG)), true);
      assert.deepEqual(sortedKeys(tensors), ['constructor', 'toString']);
    });

    it('is the only one applyMigrations applies to an otherwise current checkpoint', () => {
      const tensors = currentTensors();
      tensors['module.extra'] = t([9]);
      const result = applyMigrations(meta(CURRENT_CONFIG), tensors);
      assert.deepEqual(result.applied, ['strip-wrapper-prefixes']);
      assert.ok(tensors.extra && !tensors['module.extra']);
    });
  });

  describe('architecture-constants', () => {
    const m = migration('architecture-constants');

    it('gives a config without the constants the legacy ones, in model_config and the program config', () => {
      const patched = m.patchMeta!({
        ...meta({ ...OLD_CONFIG }),
        config: { ...OLD_CONFIG, data: '/d.txt' },
      })!;
      assert.deepEqual(patched.model_config, { ...OLD_CONFIG, ...LEGACY_ARCHITECTURE });
      assert.deepEqual(patched.config, { ...OLD_CONFIG, data: '/d.txt', ...LEGACY_ARCHITECTURE });
    });

    it('fills only what is missing, and leaves current and non-GPT configs alone', () => {
      const partial = m.patchMeta!(meta({ ...OLD_CONFIG, rotary_base: 5 }))!;
      assert.equal(partial.model_config!.rotary_base, 5);
      assert.equal(partial.model_config!.qk_scale, LEGACY_ARCHITECTURE.qk_scale);
      assert.equal(m.patchMeta!(meta({ ...CURRENT_CONFIG })), null);
      assert.equal(m.patchMeta!({ ...meta(), config: { hidden: 3 } }), null);
      assert.equal(m.patchMeta!(meta()), null);
    });
  });

  describe('per-layer-scalars', () => {
    const m = migration('per-layer-scalars');

    it('adds resid_lambdas = 1 and x0_lambdas = 0, one per layer, to a transformer model', () => {
      const tensors: NamedTensors = { 'transformer.wte.weight': t([1, 2]) };
      assert.equal(m.patchTensors!(tensors, meta({ ...CURRENT_CONFIG, n_layer: 3 })), true);
      assert.deepEqual(sortedKeys(tensors), ['resid_lambdas', 'transformer.wte.weight', 'x0_lambdas']);
      assert.equal(tensors.resid_lambdas!.dtype, 'F32');
      assert.deepEqual(tensors.resid_lambdas!.shape, [3]);
      assert.deepEqual(values(tensors.resid_lambdas), [1, 1, 1]);
      assert.equal(tensors.x0_lambdas!.dtype, 'F32');
      assert.deepEqual(tensors.x0_lambdas!.shape, [3]);
      assert.deepEqual(values(tensors.x0_lambdas), [0, 0, 0]);
    });

    it('adds only the missing one, keeping trained values', () => {
      const trained = t([0.5, 0.25]);
      const tensors: NamedTensors = { 'transformer.wte.weight': t([1]), resid_lambdas: trained };
      assert.equal(m.patchTensors!(tensors, meta(CURRENT_CONFIG)), true);
      assert.equal(tensors.resid_lambdas, trained);
      assert.deepEqual(values(tensors.x0_lambdas), [0, 0]);
    });

    it('does nothing when both exist, without transformer tensors, or without a model_config', () => {
      const full = currentTensors();
      assert.equal(m.patchTensors!(full, meta(CURRENT_CONFIG)), false);
      const other: NamedTensors = { 'encoder.weight': t([1]) };
      assert.equal(m.patchTensors!(other, meta(CURRENT_CONFIG)), false);
      assert.deepEqual(sortedKeys(other), ['encoder.weight']);
      const noConfig: NamedTensors = { 'transformer.wte.weight': t([1]) };
      assert.equal(m.patchTensors!(noConfig, meta()), false);
      assert.deepEqual(sortedKeys(noConfig), ['transformer.wte.weight']);
    });

    it('needs a positive integer n_layer to size the scalars (SchemaError naming the field)', () => {
      for (const n_layer of [undefined, 0, 2.5, '2']) {
        assert.throws(
          () => m.patchTensors!({ 'transformer.wte.weight': t([1]) }, meta({ n_head: 4, n_layer })),
          (err: unknown) => err instanceof SchemaError && err.field === 'model_config.n_layer',
          String(n_layer),
        );
      }
    });

    it('is the only one applyMigrations applies to an otherwise current checkpoint', () => {
      const tensors = currentTensors();
      delete tensors.x0_lambdas;
      const result = applyMigrations(meta(CURRENT_CONFIG), tensors);
      assert.deepEqual(result.applied, ['per-layer-scalars']);
      assert.deepEqual(values(tensors.x0_lambdas), [0, 0]);
    });
  });

  describe('idempotence', () => {
    it('an old checkpoint gets every migration once; applying again changes nothing further', () => {
      const tensors: NamedTensors = {
        '_orig_mod.transformer.wte.weight': t([1, 2, 3]),
        'module.lm_head.weight': t([4]),
      };
      const first = applyMigrations(meta({ ...OLD_CONFIG }), tensors);
      assert.deepEqual(first.applied, IDS);
      const keys = sortedKeys(tensors);
      const snapshot = Object.fromEntries(keys.map((k) => [k, tensors[k]]));
      const second = applyMigrations(first.meta, tensors);
      assert.deepEqual(second.applied, []);
      assert.deepEqual(second.meta, first.meta);
      assert.deepEqual(sortedKeys(tensors), keys);
      for (const k of keys) assert.equal(tensors[k], snapshot[k], k);
    });

    it('holds for any mix of missing config keys, prefixes and per-layer scalars', () => {
      const prefix = fc.constantFrom('', 'module.', '_orig_mod.', '_orig_mod.module.', 'module.module.');
      const config = fc.record(
        {
          n_layer: fc.integer({ min: 1, max: 4 }),
          n_head: fc.integer({ min: 1, max: 8 }),
          n_kv_head: fc.integer({ min: 1, max: 8 }),
          window_pattern: fc.constantFrom('L', 'SSSL'),
        },
        { requiredKeys: ['n_layer'] },
      );
      const names = fc.uniqueArray(
        fc.constantFrom(
          'transformer.wte.weight',
          'transformer.h.0.w',
          'lm_head.weight',
          'resid_lambdas',
          'x0_lambdas',
        ),
        {
          maxLength: 5,
        },
      );
      fc.assert(
        fc.property(
          config,
          fc.option(names, { nil: undefined }),
          fc.array(prefix, { minLength: 5, maxLength: 5 }),
          (cfg, bare, prefixes) => {
            const tensors: NamedTensors | null = bare
              ? Object.fromEntries(bare.map((n, i) => [`${prefixes[i]}${n}`, t([i])]))
              : null;
            const first = applyMigrations(meta({ ...cfg }), tensors);
            const keys = tensors ? sortedKeys(tensors) : null;
            const second = applyMigrations(first.meta, tensors);
            assert.deepEqual(second.applied, []);
            assert.deepEqual(second.meta, first.meta);
            assert.deepEqual(tensors ? sortedKeys(tensors) : null, keys);
            // And the first pass left the checkpoint in today's shape.
            assert.ok(first.meta.model_config!.window_pattern !== undefined);
            assert.equal(first.meta.model_config!.rotary_base, LEGACY_ARCHITECTURE.rotary_base);
            if (cfg.n_head !== undefined) assert.ok(first.meta.model_config!.n_kv_head !== undefined);
            if (tensors) {
              assert.ok(
                Object.keys(tensors).every((k) => !k.startsWith('module.') && !k.startsWith('_orig_mod.')),
              );
              if (Object.keys(tensors).some((k) => k.startsWith('transformer.'))) {
                assert.ok(tensors.resid_lambdas && tensors.x0_lambdas);
              }
            }
          },
        ),
      );
    });
  });

  describe('loadCheckpoint', () => {
    let dir: string;
    before(async () => {
      dir = await fs.mkdtemp(join(tmpdir(), 'migrations-test-'));
      await saveOld(dir, 10);
      await saveCheckpoint(dir, 20, {
        model: currentTensors(),
        meta: { model_config: { ...CURRENT_CONFIG } },
      });
      await saveCheckpoint(dir, 30, {
        model: { 'module.lm_head.weight': t([1]), 'lm_head.weight': t([2]) },
        meta: { model_config: { ...CURRENT_CONFIG } },
      });
    });
    after(async () => {
      await fs.rm(dir, { recursive: true, force: true });
    });

    it('applies the migrations to an old checkpoint and reports their ids in order', async () => {
      const loaded = await loadCheckpoint(dir, 10);
      assert.deepEqual(loaded.migrations, IDS);
      assert.deepEqual(loaded.meta.model_config, {
        ...OLD_CONFIG,
        window_pattern: 'L',
        n_kv_head: OLD_CONFIG.n_head,
        ...LEGACY_ARCHITECTURE,
      });
      assert.deepEqual(sortedKeys(loaded.model!), [
        'lm_head.weight',
        'resid_lambdas',
        'transformer.wte.weight',
        'x0_lambdas',
      ]);
      assert.deepEqual(values(loaded.model!['transformer.wte.weight']), [1, 2, 3]);
      assert.deepEqual(values(loaded.model!.resid_lambdas), [1, 1]);
      assert.deepEqual(values(loaded.model!.x0_lambdas), [0, 0]);
      // Optimizer state names are not model tensors: left as saved.
      assert.deepEqual(Object.keys(loaded.optimizer!), ['exp_avg.transformer.wte.weight']);
    });

    it('patches in memory only: the files still verify and load the same way again', async () => {
      assert.equal((await verifyCheckpoint(dir, 10)).ok, true);
      const again = await loadCheckpoint(dir, 10);
      assert.deepEqual(again.migrations, IDS);
      const raw = await loadCheckpoint(dir, 10, { migrate: false });
      assert.deepEqual(raw.migrations, []);
      assert.deepEqual(raw.meta.model_config, OLD_CONFIG);
      assert.deepEqual(sortedKeys(raw.model!), [
        '_orig_mod.lm_head.weight',
        '_orig_mod.transformer.wte.weight',
      ]);
    });

    it('without the model, applies only the meta migrations', async () => {
      const loaded = await loadCheckpoint(dir, 10, { loadModel: false });
      assert.equal(loaded.model, null);
      assert.deepEqual(loaded.migrations, [
        'window-pattern-default',
        'n-kv-head-default',
        'architecture-constants',
      ]);
    });

    it('reports no migrations for a current checkpoint', async () => {
      const loaded = await loadCheckpoint(dir, 20);
      assert.deepEqual(loaded.migrations, []);
      assert.deepEqual(loaded.meta.model_config, CURRENT_CONFIG);
      assert.deepEqual(sortedKeys(loaded.model!), sortedKeys(currentTensors()));
    });

    it('rejects a checkpoint whose prefixed and bare names collide', async () => {
      await assert.rejects(
        loadCheckpoint(dir, 30),
        (err: unknown) => err instanceof SchemaError && /both present/.test(err.message),
      );
    });
  });

  describe('logging', () => {
    it('logs each applied migration exactly once per process, however many checkpoints it patches', async () => {
      const runs = await Promise.all([runChild(), runChild()]);
      for (const run of runs) {
        assert.equal(run.code, 0, `child failed\n${run.stderr}`);
        const { beforeLoad, loads, records } = JSON.parse(run.stdout) as {
          beforeLoad: number;
          loads: string[][];
          records: Array<{ level: number; msg: string; migration?: string }>;
        };
        assert.equal(beforeLoad, 0, 'saving logged something');
        // Every load still reports what it applied; only the log line is once per process.
        assert.deepEqual(loads, [IDS, IDS, IDS, IDS, IDS]);
        const migrationRecords = records.filter((r) => r.migration !== undefined);
        assert.deepEqual(
          migrationRecords.map((r) => r.migration),
          IDS,
          'each migration logged once, in order (a second process logs them again)',
        );
        for (const r of migrationRecords) {
          assert.equal(r.level, 30);
          assert.ok(
            r.msg.includes(r.migration!) && r.msg.includes(migration(r.migration!).description),
            r.msg,
          );
        }
      }
    });
  });
}

if (process.env.MIGRATIONS_LOG_CHILD === '1') {
  childMain().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
} else {
  tests();
}

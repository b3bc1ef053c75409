/**
 * Native TensorFlow (tfjs-node built by infra/install-native.sh) against wasm: ms per training step of three
 * GPT sizes at batch 8; model FLOPs utilisation against the peak of a large matmul measured on the same
 * backend in the same run; and, as the anchor outside TypeScript, the same step in Python TensorFlow (one
 * tf.function, from the same wheel, with as many threads as the native backend uses) started from the same
 * weights and batch. Every contender runs in a fresh process, one at a time.
 * Usage: npm run bench:native [-- --quick]   (--quick: fewer steps, for a smoke run)
 * Needs infra/install-native.sh to have run; creates the gitignored bench/.venv with tensorflow-cpu the first
 * time.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, headDim, LEGACY_ARCHITECTURE, normalizeConfig, type GPTConfig } from '../model/gpt';
import { fmt, markdownTable } from './lib/stats';
import { machineInfo } from './lib/system';

const TF_WHEEL = 'tensorflow-cpu==2.21.0';
const BATCH = 8;
const MATMUL_N = 1024;
/**
 * Every size uses the project's first architecture (LEGACY_ARCHITECTURE: no value embeddings, smear or
 * backout, no vocabulary padding): the one bench/python/gpt_step.py writes out in Python TensorFlow, so
 * that all contenders compute the same step.
 */
const SIZES: Array<{ name: string; config: Partial<GPTConfig> }> = [
  { name: 'demo (d2, n_embd 64, seq 64)', config: { ...DEFAULT_CONFIG, ...LEGACY_ARCHITECTURE } },
  {
    name: 'd4, n_embd 256, seq 64',
    config: { ...LEGACY_ARCHITECTURE, n_layer: 4, n_embd: 256, sequence_len: 64 },
  },
  {
    name: 'd4, n_embd 256, seq 256',
    config: { ...LEGACY_ARCHITECTURE, n_layer: 4, n_embd: 256, sequence_len: 256 },
  },
];
const quick = process.argv.includes('--quick');
/** [warmup, timed] steps: wasm takes seconds a step on the largest model. */
const STEPS = { fast: quick ? [1, 3] : [3, 10], wasm: quick ? [1, 2] : [2, 5] } as const;

const ROOT = join(__dirname, '..');
const VENV = join(__dirname, '.venv');
const PYTHON = join(VENV, 'bin', 'python');

interface StepResult {
  medianMs: number;
  minMs: number;
  maxMs: number;
  losses: number[];
  params?: number;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, what: string): Record<string, unknown> {
  const res = spawnSync(command, args, {
    cwd: ROOT,
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2', ...env },
    encoding: 'utf8',
    maxBuffer: 64 * 2 ** 20,
  });
  if (res.status !== 0) throw new Error(`${what} failed (${res.status}):\n${res.stderr}`);
  const line = res.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Record<string, unknown>;
}

const tsChild = (file: string, ...args: string[]) => [
  '--import',
  'tsx',
  join(__dirname, 'lib', file),
  ...args,
];

/** The venv with the same TensorFlow wheel the native backend was built from (created once). */
function ensureVenv(): void {
  if (existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import tensorflow, safetensors']).status === 0) return;
  console.error(`bench: creating ${VENV} with ${TF_WHEEL} (one time)`);
  const steps = [
    ['python3', ['-m', 'venv', VENV]],
    [PYTHON, ['-m', 'pip', 'install', '--quiet', TF_WHEEL, 'safetensors', 'numpy']],
  ] as const;
  for (const [cmd, args] of steps) {
    const res = spawnSync(cmd, args, { stdio: 'inherit' });
    if (res.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
  }
}

/**
 * Training FLOPs of one step (PaLM's count): 6 per weight of each matmul layer per token (forward 2,
 * backward 4: q, k, v, proj, MLP, lm_head; the embedding is a lookup) plus 12 * layers * T * n_embd per token
 * for attention (scores and weighted sum, forward and backward, the causal half not subtracted).
 */
function flopsPerStep(c: GPTConfig, batch: number): number {
  const C = c.n_embd;
  const kv = c.n_kv_head * headDim(c);
  const perLayer = C * C + 2 * kv * C + C * C + 8 * C * C;
  const weights = c.n_layer * perLayer + c.vocab_size * C;
  return batch * c.sequence_len * (6 * weights + 12 * c.n_layer * c.sequence_len * C);
}

function main(): void {
  ensureVenv();
  const machine = machineInfo();
  // TensorFlow's own default on x86: oneDNN custom ops on (the other setting is measured beside it).
  const onednn = process.env.TF_ENABLE_ONEDNN_OPTS ?? '1';
  const started = Date.now();
  const loadBefore = loadavg()[0]!;

  // The peak is the best rep of a large matmul, measured before and after the models (other load on the
  // machine only ever lowers it).
  const peak: Record<string, number> = {};
  const measurePeak = (when: string) => {
    for (const backend of ['tensorflow', 'wasm']) {
      const args = tsChild('matmul-child.ts', backend, String(MATMUL_N), '10');
      const r = run(process.execPath, args, { TF_ENABLE_ONEDNN_OPTS: onednn }, `matmul ${backend}`);
      peak[backend] = Math.max(peak[backend] ?? 0, (r.bestGflops as number) * 1e9);
      peakRows.push([
        backend,
        when,
        `${MATMUL_N}`,
        fmt(r.bestGflops as number, 1),
        fmt(r.medianGflops as number, 1),
      ]);
    }
  };
  const peakRows: string[][] = [];
  measurePeak('before');

  const rows: string[][] = [];
  const checks: string[] = [];
  for (const size of SIZES) {
    const config = normalizeConfig(size.config);
    const configArg = JSON.stringify(config);
    const dump = mkdtempSync(join(tmpdir(), 'bench-native-'));
    try {
      const step = (backend: string, env: NodeJS.ProcessEnv, dumpDir?: string): StepResult => {
        const [warmup, timed] = backend === 'wasm' ? STEPS.wasm : STEPS.fast;
        const args = [
          backend,
          String(warmup),
          String(timed),
          String(BATCH),
          configArg,
          ...(dumpDir ? [dumpDir] : []),
        ];
        return run(
          process.execPath,
          tsChild('step-child.ts', ...args),
          env,
          `${backend} ${size.name}`,
        ) as never;
      };
      const native = step('tensorflow', { TF_ENABLE_ONEDNN_OPTS: onednn }, dump);
      const nativeOnednn = step('tensorflow', { TF_ENABLE_ONEDNN_OPTS: onednn === '1' ? '0' : '1' });
      const wasm = step('wasm', {});
      const [warmup, timed] = STEPS.fast;
      const python = run(
        PYTHON,
        [
          join(__dirname, 'python', 'gpt_step.py'),
          dump,
          String(warmup),
          String(timed),
          String(machine.nproc),
        ],
        { TF_ENABLE_ONEDNN_OPTS: onednn },
        `python ${size.name}`,
      ) as unknown as StepResult;
      // The anchor must be the same computation: the same losses from the same weights and batch.
      const diff = Math.max(...native.losses.map((l, i) => Math.abs(l - python.losses[i]!) / Math.abs(l)));
      checks.push(
        `${size.name}: first ${native.losses.length} losses, max relative difference ${diff.toExponential(1)}`,
      );
      if (!(diff < 1e-3))
        throw new Error(`python anchor diverges on ${size.name}: ${native.losses} vs ${python.losses}`);
      const flops = flopsPerStep(config, BATCH);
      const mfu = (ms: number, backend: string) =>
        `${fmt((100 * flops) / (ms / 1000) / peak[backend]!, 1)} %`;
      rows.push([
        size.name,
        `${native.params}`,
        fmt(flops / 1e9, 2),
        fmt(wasm.medianMs, 1),
        fmt(native.medianMs, 1),
        fmt(nativeOnednn.medianMs, 1),
        fmt(python.medianMs, 1),
        `${fmt(wasm.medianMs / native.medianMs, 1)}×`,
        `${fmt(native.medianMs / python.medianMs, 2)}×`,
        mfu(wasm.medianMs, 'wasm'),
        mfu(native.medianMs, 'tensorflow'),
        mfu(python.medianMs, 'tensorflow'),
      ]);
    } finally {
      rmSync(dump, { recursive: true, force: true });
    }
  }

  measurePeak('after');
  const oneDnnLabel = onednn === '1' ? 'off' : 'on';
  console.log(
    `Machine: ${machine.cpuModel}, nproc ${machine.nproc}, ${fmt(machine.memoryGiB, 1)} GiB, Node ${machine.node}, ` +
      `${machine.os}; batch ${BATCH}; native and Python: TensorFlow 2.21.0 (${TF_WHEEL}), oneDNN custom ops ` +
      `${onednn === '1' ? 'on' : 'off'} (TF_ENABLE_ONEDNN_OPTS=${onednn}), Python with ${machine.nproc} threads; ` +
      `wasm: one thread. Steps (warmup + timed): wasm ${STEPS.wasm.join(' + ')}, others ${STEPS.fast.join(' + ')}; ` +
      `${((Date.now() - started) / 1000).toFixed(0)} s in all; 1-minute load average ${fmt(loadBefore, 2)} at the ` +
      `start and ${fmt(loadavg()[0]!, 2)} at the end (other work on the machine adds noise).\n`,
  );
  console.log(markdownTable(['backend', 'when', 'matmul n', 'best GFLOP/s', 'median GFLOP/s'], peakRows));
  console.log();
  console.log(
    markdownTable(
      [
        'model',
        'params',
        'GFLOP/step',
        'wasm ms',
        'native ms',
        `native, oneDNN ${oneDnnLabel} ms`,
        'Python tf.function ms',
        'native speed-up vs wasm',
        'native / Python time',
        'MFU wasm',
        'MFU native',
        'MFU Python',
      ],
      rows,
    ),
  );
  console.log('\nMedians of the timed steps. Same computation check (native vs Python):');
  for (const c of checks) console.log(`- ${c}`);
}

main();

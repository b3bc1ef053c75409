/**
 * Checkpoint I/O benchmark (`npm run bench:io`): one run, one set of ~512 MiB of f32 tensors, every contender.
 *
 *   write: raw node write+fsync (same chunks as our writer) | saveCheckpoint | Python save_file + os.fsync
 *   read:  raw fs.readFile (no hashing) | loadCheckpoint verify on / off | Python load_file (numpy)
 *          each once with the page cache dropped (when allowed: root + writable /proc/sys) and once warm
 *          every contender in a fresh process that builds its inputs first and times only the operation
 *   memory: peak RSS growth during buildModel vs the model's bytes (fresh child per backend: cpu, wasm)
 *   speed:  ms/step of the demo model (DEFAULT_CONFIG, batch 8) on wasm and cpu (fresh child each)
 *
 * Prints the tables and writes them, with the command and the machine, into BENCHMARKS.md (between the
 * bench:io markers). Temp files live in os.tmpdir() and are deleted at the end.
 *
 * Knobs (environment): BENCH_IO_TENSORS (64), BENCH_IO_FLOATS (2097152 per tensor), BENCH_IO_ROUNDS (5),
 * BENCH_IO_STEPS (20 measured steps, after 3 warm-up), BENCH_IO_ONLY (io,rss,steps), BENCH_IO_RSS_RUNS (3),
 * PYTHON (python3), BENCH_IO_NO_MD=1 to leave BENCHMARKS.md alone.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { saveCheckpoint } from '../checkpoint';
import { digestChunks, type ChecksumKind } from '../checkpoint/checksum';
import { safetensorsChunks } from '../checkpoint/safetensors-format';
import type { NamedTensors } from '../checkpoint/tensors';
import { normalizeConfig, parameterShapes } from '../model/config';
import { fmt, markdownTable, median, MiB } from './lib/stats';
import { dropCaches, filesystemOf, fullGc, machineInfo, syncAll } from './lib/system';

const ROOT = resolve(__dirname, '..');
const N_TENSORS = Number(process.env.BENCH_IO_TENSORS ?? 64);
const FLOATS = Number(process.env.BENCH_IO_FLOATS ?? 2 * 1024 * 1024);
const ROUNDS = Number(process.env.BENCH_IO_ROUNDS ?? 5);
/** Pause after dropping the page cache: the VM keeps reclaiming for a while, which slows the next writer. */
const SETTLE_MS = 1000;
const STEPS = Number(process.env.BENCH_IO_STEPS ?? 20);
const WARMUP_STEPS = 3;
/** Comma-separated subset of io,rss,steps (default: all). */
const ONLY = new Set((process.env.BENCH_IO_ONLY ?? 'io,rss,steps').split(','));
const RSS_RUNS = Number(process.env.BENCH_IO_RSS_RUNS ?? 3);
const PYTHON = process.env.PYTHON ?? 'python3';
const RSS_MODEL = { n_embd: 512, n_layer: 8 };
const MD_FILE = join(ROOT, 'BENCHMARKS.md');
const PY_SCRIPT = join(ROOT, 'bench', 'python', 'st_io.py');
const RAW_W = 'raw node fs (write chunks, fsync)';
const OURS_W = 'ours saveCheckpoint (crc32, fsync file + dir, manifest)';
const PY_W = 'python safetensors save_file + os.fsync';
const RAW_R = 'raw node fs.readFile (no hashing)';
const OURS_R_ON = 'ours loadCheckpoint verify on';
const OURS_R_OFF = 'ours loadCheckpoint verify off';
const PY_R = 'python safetensors load_file (numpy)';
const MD_START = '<!-- bench:io:start -->';
const MD_END = '<!-- bench:io:end -->';

// ------------------------------------------------------------------------------------------ tensors

/** Deterministic, non-trivial values (xorshift32 per tensor, mapped to [-1, 1)). */
function makeTensors(count: number, floats: number): NamedTensors {
  const cols = 1024;
  const out: NamedTensors = {};
  for (let i = 0; i < count; i++) {
    const data = new Float32Array(floats);
    let s = (0x9e3779b9 ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0 || 1;
    for (let j = 0; j < floats; j++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      data[j] = ((s >>> 8) / 16777216) * 2 - 1;
    }
    const shape = floats % cols === 0 ? [floats / cols, cols] : [floats];
    out[`blocks.${String(i).padStart(3, '0')}.weight`] = { dtype: 'F32', shape, data };
  }
  return out;
}

// ---------------------------------------------------------------------------------------- contenders

/** Before a cold contender: flush and drop the page cache where allowed, then let the machine settle. */
async function coldStart(): Promise<void> {
  if (dropCaches()) await new Promise((r) => setTimeout(r, SETTLE_MS));
  else syncAll();
}

async function rawWrite(path: string, tensors: NamedTensors): Promise<void> {
  const handle = await fs.open(path, 'wx');
  try {
    for (const chunk of safetensorsChunks(tensors).chunks) {
      let written = 0;
      while (written < chunk.byteLength) {
        const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
        written += bytesWritten;
      }
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

interface Series {
  op: string;
  who: string;
  bytes: number;
  runs: number[];
}

// ------------------------------------------------------------------------------------------ children

function runChild(args: string[], what: string): Record<string, unknown> {
  const res = spawnSync(args[0]!, args.slice(1), { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 * MiB });
  if (res.status !== 0) {
    throw new Error(`${what} failed (exit ${res.status}):\n${res.stderr}\n${res.stdout}`);
  }
  const line = res.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`${what}: no JSON result in its output:\n${res.stdout}\n${res.stderr}`);
  }
}

const tsChild = (file: string, ...args: string[]) => [
  process.execPath,
  '--import',
  'tsx',
  join(ROOT, 'bench', 'lib', file),
  ...args,
];

// ---------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = performance.now();
  const base = await fs.mkdtemp(join(tmpdir(), 'bench-io-'));
  const log = (msg: string) =>
    process.stderr.write(`[bench:io ${((performance.now() - started) / 1000).toFixed(0)}s] ${msg}\n`);
  try {
    await run(base, log, started);
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
}

/** Makes the tensors, measures what the CPU alone costs on them, and writes the source file (all untimed). */
async function prepare(base: string, log: (m: string) => void) {
  log(`generating ${N_TENSORS} x ${FLOATS} f32`);
  const tensors = makeTensors(N_TENSORS, FLOATS);
  const tensorBytes = Object.values(tensors).reduce((n, t) => n + t.data.byteLength, 0);
  const fileBytes = safetensorsChunks(tensors).totalBytes;

  // What the CPU alone costs on these bytes (no disk): explains the gap between raw and ours.
  // First touch of fresh memory (allocate + fill) of the same size: what every reader pays for its result.
  const touchS = median(
    [0, 1, 2].map(() => {
      const t0 = performance.now();
      Buffer.alloc(fileBytes, 1);
      const s = (performance.now() - t0) / 1000;
      fullGc();
      return s;
    }),
  );
  // Each checksum alone: crc32 is what saves and loads compute, sha256 what format-version-1 loads do.
  const checksumS = (kind: ChecksumKind) =>
    median(
      [0, 1, 2].map(() => {
        const t0 = performance.now();
        digestChunks(safetensorsChunks(tensors).chunks, [kind]);
        return (performance.now() - t0) / 1000;
      }),
    );
  const hashS = checksumS('sha256');
  const crcS = checksumS('crc32');

  // Page-cache-only write (no fsync): how much of a write is the disk.
  const cacheWrite: number[] = [];
  for (let r = 0; r < (ONLY.has('io') ? 3 : 0); r++) {
    const p = join(base, `cache-${r}.bin`);
    await coldStart();
    const t0 = performance.now();
    const h = await fs.open(p, 'wx');
    for (const c of safetensorsChunks(tensors).chunks) await h.write(c);
    await h.close();
    cacheWrite.push((performance.now() - t0) / 1000);
    await fs.rm(p);
  }

  // The source every contender builds its tensors from (untimed).
  const sourcePath = join(base, 'source.safetensors');
  if (ONLY.has('io')) await rawWrite(sourcePath, tensors);
  return { tensorBytes, fileBytes, touchS, hashS, crcS, cacheWrite, sourcePath };
}

async function run(base: string, log: (m: string) => void, started: number): Promise<void> {
  const machine = machineInfo();
  const fsType = filesystemOf(base);
  const canDrop = dropCaches();
  log(
    `temp dir on ${fsType}; page cache ${canDrop ? 'dropped before every cold contender' : 'NOT droppable (not root?)'}`,
  );

  const loadStart = loadavg()[0]!;
  const { tensorBytes, fileBytes, touchS, hashS, crcS, cacheWrite, sourcePath } = await prepare(base, log);
  fullGc();

  const series = new Map<string, Series>();
  const add = (op: string, who: string, bytes: number, s: number) => {
    const key = `${op}\u0000${who}`;
    const entry = series.get(key) ?? { op, who, bytes, runs: [] };
    entry.runs.push(s);
    series.set(key, entry);
  };
  const cold = canDrop ? 'read (cold cache)' : 'read (cache not dropped)';
  const warm = 'read (warm cache)';
  const W = 'write + fsync';
  let pyFailed: string | null = null;

  // Every contender runs in a fresh process (Node or Python) that builds the tensors from the source file,
  // drops the page cache, pauses, and only then times its operation: all start from the same state.
  const node = (mode: string, target: string) =>
    runChild(
      tsChild('io-child.ts', mode, sourcePath, target, canDrop ? '1' : '0', String(SETTLE_MS)),
      `node ${mode}`,
    );
  const python = (mode: 'save' | 'load', target: string): Record<string, unknown> | null => {
    if (pyFailed) return null;
    const args = [PYTHON, PY_SCRIPT, '--mode', mode, '--raw', sourcePath, '--out', target];
    try {
      return runChild(
        canDrop ? [...args, '--drop', '--settle', String(SETTLE_MS / 1000)] : args,
        `python ${mode}`,
      );
    } catch (err) {
      pyFailed = (err as Error).message.split('\n')[0] ?? 'failed';
      log(`python contender skipped: ${pyFailed}`);
      return null;
    }
  };
  const checked = (res: Record<string, unknown>, who: string) => {
    if (res.equal !== true && res.roundtrip_equal !== true)
      throw new Error(`${who} read back different tensors`);
    return res;
  };

  for (let r = 0; r < (ONLY.has('io') ? ROUNDS : 0); r++) {
    log(`round ${r + 1}/${ROUNDS}`);
    const rawPath = join(base, `raw-${r}.safetensors`);
    const oursDir = join(base, `ours-${r}`);
    const pyPath = join(base, `py-${r}.safetensors`);

    // The contenders' order rotates from round to round.
    const writers = [
      () => add(W, RAW_W, fileBytes, Number(node('raw-write', rawPath).s)),
      () => add(W, OURS_W, fileBytes, Number(node('ours-save', oursDir).s)),
      () => {
        const py = python('save', pyPath);
        if (py) add(W, PY_W, Number(py.file_bytes), Number(py.save_s));
      },
    ];
    for (let k = 0; k < writers.length; k++) writers[(k + r) % writers.length]!();

    const readers = [
      () => {
        const res = checked(node('raw-read', rawPath), RAW_R);
        add(cold, RAW_R, fileBytes, Number(res.cold_s));
        add(warm, RAW_R, fileBytes, Number(res.warm_s));
      },
      ...(
        [
          ['ours-load-on', OURS_R_ON],
          ['ours-load-off', OURS_R_OFF],
        ] as const
      ).map(([mode, who]) => () => {
        const res = checked(node(mode, oursDir), who);
        add(cold, who, fileBytes, Number(res.cold_s));
        add(warm, who, fileBytes, Number(res.warm_s));
      }),
      () => {
        const py = existsSync(pyPath) ? python('load', pyPath) : null;
        if (!py) return;
        checked(py, PY_R);
        add(cold, PY_R, Number(py.file_bytes), Number(py.load_cold_s));
        add(warm, PY_R, Number(py.file_bytes), Number(py.load_warm_s));
      },
    ];
    for (let k = 0; k < readers.length; k++) readers[(k + r) % readers.length]!();

    await fs.rm(rawPath, { force: true });
    await fs.rm(pyPath, { force: true });
    await fs.rm(oursDir, { recursive: true, force: true });
    syncAll();
  }
  await fs.rm(sourcePath, { force: true });

  // --- peak RSS during buildModel
  log('peak RSS during buildModel (fresh child per run)');
  const gptConfig = normalizeConfig(RSS_MODEL);
  const gptTensors: NamedTensors = {};
  for (const [name, shape] of Object.entries(parameterShapes(gptConfig))) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name === 'resid_lambdas') data.fill(1);
    else if (name !== 'x0_lambdas')
      for (let i = 0; i < n; i++) data[i] = (((i * 2654435761) >>> 0) / 2 ** 32 - 0.5) * 0.02;
    gptTensors[name] = { dtype: 'F32', shape, data };
  }
  const gptBytes = Object.values(gptTensors).reduce((n, t) => n + t.data.byteLength, 0);
  const gptDir = join(base, 'gpt');
  await saveCheckpoint(gptDir, 1, { model: gptTensors, meta: { model_config: gptConfig } });
  const rss: Record<string, Record<string, unknown>[]> = {};
  for (const backend of ONLY.has('rss') ? ['cpu', 'wasm'] : []) {
    rss[backend] = [];
    for (let i = 0; i < RSS_RUNS; i++) {
      rss[backend]!.push(runChild(tsChild('rss-child.ts', gptDir, '1', backend), `rss child (${backend})`));
    }
  }

  // --- ms/step of the demo model
  log('ms/step of the demo model (fresh child per backend)');
  const steps: Record<string, Record<string, unknown>> = {};
  for (const backend of ONLY.has('steps') ? ['wasm', 'cpu'] : []) {
    steps[backend] = runChild(
      tsChild('step-child.ts', backend, String(WARMUP_STEPS), String(STEPS), '8'),
      `step child (${backend})`,
    );
  }

  // ------------------------------------------------------------------------------------------ report
  const opOrder = [W, cold, warm];
  const whoOrder = [RAW_W, OURS_W, PY_W, RAW_R, OURS_R_ON, OURS_R_OFF, PY_R];
  const all = [...series.values()].sort(
    (x, y) =>
      opOrder.indexOf(x.op) - opOrder.indexOf(y.op) || whoOrder.indexOf(x.who) - whoOrder.indexOf(y.who),
  );
  const rate = (s: Series) => s.bytes / MiB / median(s.runs);
  const bestRate = (s: Series) => s.bytes / MiB / Math.min(...s.runs);
  const find = (op: string, who: string) => all.find((s) => s.op === op && s.who === who);
  const rawOf = (op: string) => find(op, op === W ? RAW_W : RAW_R);
  const pyOf = (op: string) => find(op, op === W ? PY_W : PY_R);
  /** "median-based ratio (best-based ratio)" of a's speed to b's. */
  const ratio = (a: Series, b: Series) => `${fmt(rate(a) / rate(b))}× (${fmt(bestRate(a) / bestRate(b))}×)`;
  const ioRows = all.map((s) => {
    const raw = rawOf(s.op);
    const py = pyOf(s.op);
    return [
      s.op,
      s.who,
      fmt(median(s.runs), 3),
      fmt(Math.min(...s.runs), 3),
      fmt(rate(s), 0),
      raw && s !== raw ? ratio(s, raw) : '',
      py && s !== py && s !== raw ? ratio(s, py) : '',
      s.runs.map((x) => fmt(x, 3)).join(', '),
    ];
  });
  const ioTable = markdownTable(
    [
      'operation',
      'contender',
      'median s',
      'best s',
      'MiB/s (median)',
      'vs raw (best)',
      'vs Python (best)',
      'runs (s), in order',
    ],
    ioRows,
  );

  const rssRows = Object.entries(rss).map(([backend, runs]) => {
    const growthSampled = runs.map((x) => Number(x.peakSampled) - Number(x.rssBefore));
    const growthHwm = runs.map((x) => (x.hwmReset ? Number(x.hwmAfter) - Number(x.rssBefore) : NaN));
    const peak = runs.map((_, i) =>
      Math.max(growthSampled[i]!, Number.isNaN(growthHwm[i]!) ? 0 : growthHwm[i]!),
    );
    const settled = runs.map((x) => Number(x.rssSettled) - Number(x.rssBefore));
    const buildMs = runs.map((x) => Number(x.buildMs));
    return [
      backend,
      fmt(gptBytes / MiB, 1),
      fmt(median(runs.map((x) => Number(x.rssBefore))) / MiB, 0),
      fmt(median(growthSampled) / MiB, 1),
      fmt(median(growthHwm) / MiB, 1),
      fmt(median(peak) / gptBytes) + '× (max ' + fmt(Math.max(...peak) / gptBytes) + '×)',
      fmt(median(settled) / MiB, 1),
      fmt(median(buildMs), 0),
    ];
  });
  const rssTable = markdownTable(
    [
      'backend',
      'model MiB',
      'RSS before MiB',
      'peak growth (polled) MiB',
      'peak growth (VmHWM) MiB',
      'peak growth / model bytes',
      'growth after GC MiB',
      'buildModel ms',
    ],
    rssRows,
  );

  const stepRows = Object.entries(steps).map(([backend, x]) => [
    backend,
    String(x.params),
    String(x.batch),
    `${x.warmup} + ${x.steps}`,
    fmt(Number(x.medianMs), 1),
    `${fmt(Number(x.minMs), 1)} – ${fmt(Number(x.maxMs), 1)}`,
  ]);
  const stepTable = markdownTable(
    ['backend', 'params', 'batch', 'warm-up + measured', 'median ms/step', 'min – max'],
    stepRows,
  );

  const targets: string[] = [];
  const check = (label: string, ok: boolean, detail: string) =>
    targets.push(`- ${ok ? 'MET' : 'MISSED'}: ${label} — ${detail}`);
  const speed = (label: string, ours: Series | undefined, other: Series | undefined, want: number) => {
    if (!ours || !other) return;
    const r = rate(ours) / rate(other);
    const best = bestRate(ours) / bestRate(other);
    check(label, r >= want, `${fmt(r)}× on medians (${fmt(best)}× on best runs)`);
  };
  speed('save ≥ 0.9× raw', find(W, OURS_W), rawOf(W), 0.9);
  speed('save ≥ 1.0× Python', find(W, OURS_W), pyOf(W), 1);
  for (const op of [cold, warm]) {
    for (const [v, who] of [
      ['on', OURS_R_ON],
      ['off', OURS_R_OFF],
    ] as const) {
      speed(`load ${op}, verify ${v} ≥ 0.9× raw`, find(op, who), rawOf(op), 0.9);
      speed(`load ${op}, verify ${v} ≥ 1.0× Python`, find(op, who), pyOf(op), 1);
    }
  }
  for (const row of rssRows) {
    const runs = rss[row[0]!]!;
    const peak = median(
      runs.map((x) =>
        Math.max(
          Number(x.peakSampled) - Number(x.rssBefore),
          x.hwmReset ? Number(x.hwmAfter) - Number(x.rssBefore) : 0,
        ),
      ),
    );
    check(
      `peak RSS growth ≤ 1.15× model bytes (${row[0]})`,
      peak / gptBytes <= 1.15,
      `${fmt(peak / gptBytes)}×`,
    );
  }

  const totalS = (performance.now() - started) / 1000;
  const lines = [
    `Command: \`npm run bench:io\` (\`node --import tsx bench/io.ts\`), ${new Date().toISOString().slice(0, 10)}, ${fmt(totalS, 0)} s in all.`,
    '',
    `Machine: ${machine.cpuModel}, nproc ${machine.nproc}, ${fmt(machine.memoryGiB, 1)} GiB memory, Node ${machine.node}, ${machine.os}; temp files in os.tmpdir() on ${fsType}; ` +
      `1-minute load average ${fmt(loadStart)} at the start and ${fmt(loadavg()[0]!)} at the end (other work on the machine adds noise).`,
    '',
    `Data: ${N_TENSORS} f32 tensors of ${FLOATS} floats = ${fmt(tensorBytes / MiB, 0)} MiB (file ${fileBytes} bytes), deterministic values; ` +
      `median (and best) of ${ROUNDS} runs per contender, the contenders' order rotating between rounds; MiB/s = file bytes / median time; ` +
      'ratios are speed ratios (> 1 = ours faster), on medians and, in brackets, on best runs. ' +
      (canDrop
        ? `Page cache: \`sync\` + \`echo 3 > /proc/sys/vm/drop_caches\` (run as root) and a ${SETTLE_MS} ms pause before every write contender and every cold read; the warm read follows the cold one on the same file.`
        : 'Page cache could NOT be dropped (not root): "cold" reads may be partly cached.') +
      ' Every contender runs in a fresh process (Node: bench/lib/io-child.ts, Python: bench/python/st_io.py) that builds the tensors from a source file, drops the cache, pauses and only then times itself: interpreter start-up and building the inputs are excluded.',
    '',
    ioTable,
    '',
    `CPU-only costs on the same bytes: crc32 ${fmt(crcS, 3)} s (${fmt(tensorBytes / MiB / crcS, 0)} MiB/s); ` +
      `sha256 ${fmt(hashS, 3)} s (${fmt(tensorBytes / MiB / hashS, 0)} MiB/s); ` +
      `write into the page cache without fsync ${fmt(median(cacheWrite), 3)} s (${fmt(fileBytes / MiB / median(cacheWrite), 0)} MiB/s); ` +
      `first touch of ${fmt(fileBytes / MiB, 0)} MiB of fresh memory (Buffer.alloc + fill) ${fmt(touchS, 3)} s (${fmt(fileBytes / MiB / touchS, 0)} MiB/s).`,
    '',
    `Peak RSS growth during \`buildModel\` (verify on) of a GPT checkpoint n_embd ${gptConfig.n_embd}, n_layer ${gptConfig.n_layer} ` +
      `(${fmt(gptBytes / MiB, 1)} MiB of f32), fresh child process per run, median of ${RSS_RUNS} runs; baseline = RSS after backend init and a full GC; ` +
      'RSS polled every 2 ms and VmHWM (reset via /proc/self/clear_refs) read after.',
    '',
    rssTable,
    '',
    `Demo model (DEFAULT_CONFIG) train step = lossAndGrads + AdamW apply + loss read back, batch 8, fresh child per backend, median of ${STEPS} steps after ${WARMUP_STEPS} warm-up steps.`,
    '',
    stepTable,
    '',
    'Targets:',
    '',
    ...targets,
  ];
  if (pyFailed) lines.push('', `Python contender skipped: ${pyFailed}`);
  const report = lines.join('\n');
  process.stdout.write('\n' + report + '\n');

  if (process.env.BENCH_IO_NO_MD !== '1') {
    const section = `${MD_START}\n## Checkpoint I/O (\`npm run bench:io\`)\n\n${report}\n${MD_END}`;
    let md = existsSync(MD_FILE) ? readFileSync(MD_FILE, 'utf8') : '# Benchmarks\n';
    const a = md.indexOf(MD_START);
    const b = md.indexOf(MD_END);
    if (a >= 0 && b > a) md = md.slice(0, a) + section + md.slice(b + MD_END.length);
    else md = md.trimEnd() + '\n\n' + section + '\n';
    writeFileSync(MD_FILE, md);
    log(`wrote ${MD_FILE}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

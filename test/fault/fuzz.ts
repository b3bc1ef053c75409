/**
 * Campaign 3: fuzzed inputs to the parsers and the CLI, in process.
 *  - safetensors files: valid files with mutated headers, length prefixes and bodies, and generated headers
 *    (decodeSafetensors, parseSafetensorsHeader with a huge claimed file length);
 *  - meta JSON and manifests: mutated valid documents and generated JSON (parseMeta, parseManifest);
 *  - CLI arguments: `main(argv)` from cli/main.ts with stdout/stderr captured, over the checkpoint commands
 *    (list, last-step, largest, inspect, verify, prune, gc, report, copy) with fuzzed tags, sources, steps,
 *    paths and flags, on real checkpoint fixtures inside a sandbox directory (the working directory is moved
 *    there, so no fuzzed path writes outside it). Commands that train, sample or reach Temporal are left out.
 * Goals: no untyped error (parsers: only CheckpointError subclasses; CLI: exit 0/1/2, and on 1/2 one line
 * "ckpt: error: ..." without the "--debug" hint that marks an unexpected error), no input over the time
 * bound, and bounded memory growth.
 * Usage: npm run fault:fuzz   (FAULT_SEED, FAULT_FUZZ_INPUTS)
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeSafetensors,
  encodeSafetensors,
  f32Tensor,
  parseManifest,
  parseMeta,
  parseSafetensorsHeader,
  saveCheckpoint,
  type NamedTensors,
} from '../../checkpoint';
import { main as cliMain } from '../../cli/main';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { Budget, describe, envInt, Examples, isTyped, report, Rng, SEED } from './lib';

const INPUTS = envInt('FAULT_FUZZ_INPUTS', 10_000);
const PER_INPUT_MS = envInt('FAULT_FUZZ_INPUT_MS', 5000);
const budget = new Budget(envInt('FAULT_BUDGET_S', 420));
const rng = new Rng(SEED);
const MEM_BOUND = { rss: 768 << 20, arrayBuffers: 256 << 20 };

// ------------------------------------------------------------------------------------------ generators

const DTYPES = [
  'F64',
  'F32',
  'F16',
  'BF16',
  'I64',
  'I32',
  'I16',
  'I8',
  'U64',
  'U32',
  'U16',
  'U8',
  'BOOL',
  'f32',
  'F8_E4M3',
  'C64',
  '',
  'F32 ',
];
const WEIRD_NUMBERS = [
  0,
  1,
  -1,
  2,
  7,
  8,
  255,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  1e308,
  -0,
  1.5,
  1e21,
  100_000_000,
  100_000_001,
];
const WEIRD_STRINGS = [
  '',
  ' ',
  '__metadata__',
  '..',
  '../x',
  'a/b',
  '\0',
  '\u202e',
  'é',
  '😀',
  '\\',
  '"',
  'constructor',
  '__proto__',
  'toString',
  'x'.repeat(300),
];

function randomJson(depth = 0): unknown {
  const r = rng.int(depth > 4 ? 5 : 8);
  switch (r) {
    case 0:
      return rng.pick(WEIRD_NUMBERS);
    case 1:
      return rng.pick(WEIRD_STRINGS);
    case 2:
      return rng.pick([null, true, false]);
    case 3:
      return rng.int(1000);
    case 4:
      return rng.pick(DTYPES);
    case 5:
      return Array.from({ length: rng.int(4) }, () => randomJson(depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(5); i > 0; i--)
        o[
          rng.pick([
            ...WEIRD_STRINGS,
            'dtype',
            'shape',
            'data_offsets',
            'step',
            'files',
            'format',
            'world_size',
          ])
        ] = randomJson(depth + 1);
      return o;
    }
  }
}

function randomTensors(): NamedTensors {
  const out: NamedTensors = {};
  for (let i = rng.range(1, 4); i > 0; i--) {
    const n = rng.int(6);
    const shape = rng.bool() ? [n] : [n, rng.range(1, 3)];
    const count = shape.reduce((a, b) => a * b, 1);
    out[`t${i}.${rng.pick(['weight', 'bias', 'x'])}`] = f32Tensor(
      shape,
      Array.from({ length: count }, () => rng.next()),
    );
  }
  return out;
}

function u64le(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** A byte string built from a valid file by one or more mutations, or generated from scratch. */
function safetensorsInput(): Buffer {
  const valid = Buffer.from(encodeSafetensors(randomTensors(), rng.bool(0.3) ? { format: 'pt' } : undefined));
  const headerLen = Number(valid.readBigUInt64LE(0));
  const header = valid.subarray(8, 8 + headerLen).toString('utf8');
  const body = valid.subarray(8 + headerLen);
  switch (rng.int(9)) {
    case 0: {
      const b = Buffer.from(valid);
      for (let k = rng.range(1, 4); k > 0; k--) {
        const at = rng.int(Math.min(b.length, 8 + headerLen));
        b[at] = b[at]! ^ rng.range(1, 255);
      }
      return b;
    }
    case 1:
      return valid.subarray(0, rng.int(valid.length));
    case 2: // a lying length prefix
      return Buffer.concat([
        u64le(
          rng.pick([
            0n,
            1n,
            2n ** 63n,
            2n ** 64n - 1n,
            100_000_000n,
            100_000_001n,
            BigInt(headerLen + rng.range(-3, 3) < 0 ? 0 : headerLen + rng.range(-3, 3)),
          ]),
        ),
        valid.subarray(8),
      ]);
    case 3: {
      // a textual mutation of the JSON that keeps the length prefix right
      const edits = [
        () => header.replace(/"F32"/, `"${rng.pick(DTYPES)}"`),
        () =>
          header.replace(/\[(\d+),(\d+)\]/, () => `[${rng.pick(WEIRD_NUMBERS)},${rng.pick(WEIRD_NUMBERS)}]`),
        () => header.replace(/"shape":\[[^\]]*\]/, `"shape":${JSON.stringify(randomJson())}`),
        () =>
          header.replace(
            /\{"/,
            `{"${rng.pick(WEIRD_STRINGS).replace(/["\\]/g, '')}":${JSON.stringify(randomJson())},"`,
          ),
        () => header.replace(/"(t\d)/, '"t1'), // duplicate names
        () => header.replace(/\d+/, rng.pick(['1.0', '1e3', '-0', '-1', '18446744073709551616'])),
        () => '[' + header + ']',
        () => header + ' '.repeat(rng.int(9)),
        () => '\ufeff' + header,
      ];
      const h = Buffer.from(rng.pick(edits)());
      return Buffer.concat([u64le(BigInt(h.length)), h, body]);
    }
    case 4: {
      const h = Buffer.from(JSON.stringify(randomJson()) ?? 'null');
      return Buffer.concat([u64le(BigInt(h.length)), h, rng.bytes(rng.int(64))]);
    }
    case 5: {
      // well-formed entries with hostile numbers
      const o: Record<string, unknown> = {};
      for (let i = rng.range(1, 3); i > 0; i--) {
        o[`t${i}`] = {
          dtype: rng.pick(DTYPES),
          shape: Array.from({ length: rng.int(4) }, () => rng.pick(WEIRD_NUMBERS)),
          data_offsets: [rng.pick(WEIRD_NUMBERS), rng.pick(WEIRD_NUMBERS)],
        };
      }
      const h = Buffer.from(JSON.stringify(o));
      return Buffer.concat([u64le(BigInt(h.length)), h, rng.bytes(rng.int(256))]);
    }
    case 6: {
      // deep nesting and long strings
      const depth = rng.range(100, 20000);
      const h = Buffer.from(
        rng.bool()
          ? '['.repeat(depth) + ']'.repeat(depth)
          : `{"a":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`,
      );
      return Buffer.concat([u64le(BigInt(h.length)), h]);
    }
    case 7: {
      // invalid UTF-8 in the header
      const h = Buffer.from(header);
      h[rng.int(h.length)] = rng.pick([0x80, 0xc3, 0xff, 0xfe, 0xed]);
      return Buffer.concat([u64le(BigInt(h.length)), h, body]);
    }
    default:
      return rng.bytes(rng.int(64));
  }
}

function jsonDocInput(base: Record<string, unknown>): Buffer {
  const text = JSON.stringify(base, null, rng.bool() ? 2 : undefined);
  switch (rng.int(6)) {
    case 0: {
      const b = Buffer.from(text);
      for (let k = rng.range(1, 3); k > 0; k--) {
        const at = rng.int(b.length);
        b[at] = b[at]! ^ rng.range(1, 255);
      }
      return b;
    }
    case 1:
      return Buffer.from(text.slice(0, rng.int(text.length)));
    case 2: {
      const copy = structuredClone(base);
      const keys = Object.keys(copy);
      const key = rng.bool(0.8) ? rng.pick(keys) : rng.pick(WEIRD_STRINGS);
      copy[key] = randomJson();
      return Buffer.from(JSON.stringify(copy));
    }
    case 3:
      return Buffer.from(JSON.stringify(randomJson()) ?? '');
    case 4: {
      const copy = structuredClone(base) as Record<string, unknown>;
      const files = copy.files as Record<string, unknown> | undefined;
      if (files) {
        const name = rng.pick(Object.keys(files));
        files[
          rng.bool()
            ? name
            : rng.pick([
                'model_000020.safetensors',
                'optim_000020_rank9.safetensors',
                'meta_000021.json',
                'x.json',
                '../meta_000020.json',
              ])
        ] = randomJson();
      } else copy.model_config = randomJson();
      return Buffer.from(JSON.stringify(copy));
    }
    default:
      return rng.bytes(rng.int(128));
  }
}

// ------------------------------------------------------------------------------------------ CLI

const COMMANDS = ['list', 'last-step', 'largest', 'inspect', 'verify', 'prune', 'gc', 'report', 'copy'];
const FLAGS = [
  '--step',
  '--source',
  '--json',
  '--keep-last',
  '--keep-best',
  '--keep-every',
  '--metric',
  '--mode',
  '--pin',
  '--dry-run',
  '--grace',
  '--out',
  '--include-unevaluated',
  '--help',
  '--debug',
  '-h',
  '--bogus',
  '--',
  '-x',
  '--step=',
  '--json=1',
];
const STEPS = [
  '10',
  '20',
  '0',
  '-1',
  '1.5',
  '1e3',
  '000010',
  '999999',
  '1000000',
  '9007199254740993',
  'abc',
  '',
  ' 10',
  '0x10',
  'NaN',
];

function pathArg(sandbox: string): string {
  const good = [
    'root',
    'root/base_checkpoints',
    'root/base_checkpoints/d2',
    'root/base_checkpoints/d4',
    'root/base_checkpoints/d2/',
  ];
  return rng.pick([
    ...good,
    ...good,
    join(sandbox, rng.pick(good)),
    'missing',
    'root/base_checkpoints/d2/model_000010.safetensors',
    'root/base_checkpoints/d2/meta_000010.json',
    '',
    '.',
    '..',
    '../..',
    '/nonexistent/x',
    '/dev/null',
    'root/../root/base_checkpoints/d2',
    'file://root',
    's3://',
    's3://bucket',
    's3://bucket/../x',
    's3://b/p?x#y',
    'root/base_checkpoints/' + rng.pick(WEIRD_STRINGS),
    rng.pick(WEIRD_STRINGS),
  ]);
}

function cliArgs(sandbox: string): string[] {
  const argv: string[] = [];
  const r = rng.int(20);
  if (r === 0)
    argv.push(rng.pick(['', 'help', '--help', 'bogus', 'train', 'pipeline', 'schedule', 'LIST', '-h']));
  else argv.push(rng.pick(COMMANDS));
  for (let i = rng.bool(0.7) ? 0 : rng.int(3); i >= 0; i--) argv.push(pathArg(sandbox));
  for (let i = rng.int(4); i > 0; i--) {
    const f = rng.pick(FLAGS);
    argv.push(f);
    if (['--step', '--keep-last', '--keep-best', '--keep-every', '--pin'].includes(f))
      argv.push(rng.pick(STEPS));
    else if (f === '--source') argv.push(rng.pick(['base', 'sft', 'rl', 'nope', ...WEIRD_STRINGS]));
    else if (f === '--metric') argv.push(rng.pick(['val_bpb', 'loss', ...WEIRD_STRINGS]));
    else if (f === '--mode') argv.push(rng.pick(['min', 'max', 'MIN', '']));
    else if (f === '--grace') argv.push(rng.pick(['0', '30m', '1h', '2d', '-1h', '1x', '', '99999999999d']));
    else if (f === '--out') argv.push(join('out', rng.pick(['r.html', 'a/b.html', '', '.']))); // inside the sandbox
  }
  // the positional of some commands is positional index 0, fine to shuffle a flag in first sometimes
  if (rng.bool(0.1)) argv.splice(1, 0, argv.splice(argv.length - 1, 1)[0]!);
  return argv;
}

async function makeFixtures(sandbox: string): Promise<void> {
  rmSync(join(sandbox, 'root'), { recursive: true, force: true });
  const pristine = join(sandbox, '..', 'pristine');
  cpSync(pristine, join(sandbox, 'root'), { recursive: true });
}

async function buildPristine(dir: string): Promise<void> {
  for (const tag of ['d2', 'd4']) {
    const d = join(dir, 'base_checkpoints', tag);
    for (const step of [10, 20])
      await saveCheckpoint(d, step, {
        model: tinyModel(step, 64),
        optimizer: tinyOptimizer(step),
        meta: tinyMeta({ seed: step }),
      });
  }
}

interface Captured {
  code: number | 'timeout' | 'threw';
  stdout: string;
  stderr: string;
  error?: unknown;
}

async function runCli(main: (argv: string[]) => Promise<number>, argv: string[]): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => (
    (stdout += String(chunk)),
    true
  )) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => (
    (stderr += String(chunk)),
    true
  )) as typeof process.stderr.write;
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await Promise.race([
      main(argv),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), PER_INPUT_MS))),
    ]);
    return { code, stdout, stderr };
  } catch (error) {
    return { code: 'threw', stdout, stderr, error };
  } finally {
    clearTimeout(timer);
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

// ------------------------------------------------------------------------------------------ main

type Target = 'safetensors' | 'meta' | 'manifest' | 'cli';

async function main() {
  // Read by main() on each call. A refused connection, one attempt: an s3:// path fails fast instead of looking for AWS credentials.
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
    AWS_ACCESS_KEY_ID: 'fuzz',
    AWS_SECRET_ACCESS_KEY: 'fuzz',
    AWS_REGION: 'us-east-1',
    AWS_MAX_ATTEMPTS: '1',
    CKPT_LOG_LEVEL: 'error',
  });
  const work = mkdtempSync(join(tmpdir(), 'ckpt-fault-fuzz-'));
  const sandbox = join(work, 'sandbox');
  mkdirSync(sandbox);
  await buildPristine(join(work, 'pristine'));
  await makeFixtures(sandbox);
  const cwd = process.cwd();
  process.chdir(sandbox);

  const metaBase = {
    model_config: { n_layer: 2, n_embd: 4 },
    step: 20,
    world_size: 1,
    format_version: 1,
    seed: 2,
  };
  const manifestBase = JSON.parse(
    JSON.stringify({
      format: 'temporal-ckpt',
      format_version: 1,
      step: 20,
      world_size: 1,
      files: {
        'meta_000020.json': { bytes: 10, sha256: 'a'.repeat(64) },
        'model_000020.safetensors': { bytes: 100, sha256: 'b'.repeat(64) },
        'optim_000020_rank0.safetensors': { bytes: 50, sha256: 'c'.repeat(64) },
      },
    }),
  ) as Record<string, unknown>;

  const stats = new Map<
    Target,
    { n: number; accepted: number; rejectedTyped: number; untyped: number; slow: number; maxMs: number }
  >();
  const codes = new Map<string, number>();
  const examples = new Examples();
  const before = process.memoryUsage();
  const peak = { rss: 0, arrayBuffers: 0 };
  let done = 0;
  const targets: Target[] = [
    'safetensors',
    'safetensors',
    'safetensors',
    'meta',
    'manifest',
    'cli',
    'cli',
    'cli',
  ];
  for (; done < INPUTS && !budget.spent; done++) {
    const target = rng.pick(targets);
    const s = stats.get(target) ?? { n: 0, accepted: 0, rejectedTyped: 0, untyped: 0, slow: 0, maxMs: 0 };
    stats.set(target, s);
    s.n++;
    const t0 = performance.now();
    let label = '';
    if (target === 'cli') {
      if (s.n % 400 === 0) await makeFixtures(sandbox); // prune and gc delete things
      const argv = cliArgs(sandbox);
      label = JSON.stringify(argv);
      const res = await runCli(cliMain, argv);
      codes.set(String(res.code), (codes.get(String(res.code)) ?? 0) + 1);
      if (res.code === 'timeout') {
        s.slow++;
        examples.add('cli: over the time bound', label);
      } else if (res.code === 'threw') {
        s.untyped++;
        examples.add('cli: main threw', `${label}: ${describe(res.error)}`);
      } else if (res.code === 0) s.accepted++;
      else {
        const lines = res.stderr.split('\n').filter(Boolean);
        const errorLines = lines.filter((l) => l.startsWith('ckpt: error:'));
        // A failed check (exit 1) may print its report instead (verify: "FAILED step N file: why" on stdout);
        // an error is exactly one "ckpt: error:" line.
        const oneLine =
          errorLines.length === 1 ||
          (res.code === 1 && errorLines.length === 0 && /^FAILED|^\S/.test(res.stdout));
        if (![1, 2].includes(res.code)) {
          s.untyped++;
          examples.add(`cli: exit code ${res.code}`, `${label}: ${res.stderr.slice(0, 200)}`);
        } else if (!oneLine) {
          s.untyped++;
          examples.add('cli: not a one-line error', `${label}: ${JSON.stringify(res.stderr.slice(0, 300))}`);
        } else if (res.stderr.includes('--debug for the stack trace')) {
          s.untyped++;
          examples.add('cli: untyped error (the --debug hint)', `${label}: ${errorLines[0]}`);
        } else s.rejectedTyped++;
      }
    } else {
      let input: Buffer;
      let run: () => unknown;
      if (target === 'safetensors') {
        input = safetensorsInput();
        const bytes = input;
        run = rng.bool(0.8)
          ? () => decodeSafetensors(bytes, 'fuzz.safetensors')
          : () => {
              const n = bytes.length >= 8 ? Number(bytes.readBigUInt64LE(0) & 0xffffffn) : 0;
              return parseSafetensorsHeader(
                bytes.subarray(8, 8 + n),
                rng.pick([bytes.length, 2 ** 53 - 1, 0, -1, 1.5]),
                'fuzz.safetensors',
              );
            };
      } else if (target === 'meta') {
        input = jsonDocInput(metaBase);
        const bytes = input;
        run = () => parseMeta(bytes, 20);
      } else {
        input = jsonDocInput(manifestBase);
        const bytes = input;
        run = () => parseManifest(bytes, 20);
      }
      label = `${target} ${input.length} bytes: ${JSON.stringify(input.subarray(0, 120).toString('latin1'))}`;
      try {
        run();
        s.accepted++;
      } catch (err) {
        if (isTyped(err)) s.rejectedTyped++;
        else {
          s.untyped++;
          examples.add(`${target}: untyped error`, `${describe(err)} <- ${label}`);
        }
      }
    }
    const ms = performance.now() - t0;
    s.maxMs = Math.max(s.maxMs, ms);
    if (target !== 'cli' && ms > PER_INPUT_MS) {
      s.slow++;
      examples.add(`${target}: over the time bound`, `${ms.toFixed(0)} ms: ${label}`);
    }
    if (done % 50 === 0) {
      const m = process.memoryUsage();
      peak.rss = Math.max(peak.rss, m.rss - before.rss);
      peak.arrayBuffers = Math.max(peak.arrayBuffers, m.arrayBuffers - before.arrayBuffers);
    }
  }
  process.chdir(cwd);
  rmSync(work, { recursive: true, force: true });

  const total = (k: 'untyped' | 'slow') => [...stats.values()].reduce((a, s) => a + s[k], 0);
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  report(
    `fault:fuzz (seed ${SEED}, ${budget.elapsedS.toFixed(1)} s)`,
    [
      { what: 'inputs', value: done, goal: `>= ${INPUTS}`, ok: done >= INPUTS },
      ...[...stats].map(([t, s]) => ({
        what: `${t}: accepted / rejected typed / untyped / slow (max ms)`,
        value: `${s.accepted} / ${s.rejectedTyped} / ${s.untyped} / ${s.slow} (${s.maxMs.toFixed(0)})`,
        goal: 'untyped 0, slow 0',
        ok: s.untyped === 0 && s.slow === 0,
      })),
      {
        what: 'untyped errors (all targets)',
        value: total('untyped'),
        goal: '0',
        ok: total('untyped') === 0,
      },
      { what: `inputs over ${PER_INPUT_MS} ms`, value: total('slow'), goal: '0', ok: total('slow') === 0 },
      {
        what: 'peak rss growth',
        value: mib(peak.rss),
        goal: `< ${mib(MEM_BOUND.rss)}`,
        ok: peak.rss < MEM_BOUND.rss,
      },
      {
        what: 'peak arrayBuffers growth',
        value: mib(peak.arrayBuffers),
        goal: `< ${mib(MEM_BOUND.arrayBuffers)}`,
        ok: peak.arrayBuffers < MEM_BOUND.arrayBuffers,
      },
    ],
    [`CLI exit codes: ${[...codes].map(([c, n]) => `${c}: ${n}`).join(', ')}`, ...examples.lines()],
  );
}

main().catch((err) => {
  process.stderr.write(`campaign crashed: ${describe(err)}\n${(err as Error).stack ?? ''}\n`);
  process.exit(2);
});

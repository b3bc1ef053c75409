import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendName, initBackend } from '../../model/backend';
import { BackendUnavailableError } from '../../model/errors';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { installed, loads } from '../helpers/installed';

const ROOT = join(__dirname, '..', '..');

const NATIVE = { gpu: '@tensorflow/tfjs-node-gpu', cpu: '@tensorflow/tfjs-node' } as const;
const gpuLoads = loads(NATIVE.gpu);
const cpuLoads = loads(NATIVE.cpu);
/** Why each native backend is skipped, as the log says it, for a package that does not load. */
function skipReason(pkg: string): RegExp {
  return installed(pkg)
    ? /has no native binding \(build it: bash infra\/install-native\.sh\)/
    : /is not installed/;
}

// One process per test file: these run in order against a fresh backend state.
test('the first backend that loads is chosen and named once in the log, with why the others were skipped', async () => {
  assert.equal(backendName(), undefined);
  const lines: string[] = [];
  const log = (m: string) => lines.push(m);
  const [a, b] = await Promise.all([initBackend({ log }), initBackend({ log })]);
  const expected = gpuLoads ? 'tensorflow-gpu' : cpuLoads ? 'tensorflow' : 'wasm';
  assert.equal(a.name, expected);
  assert.equal(b, a);
  assert.equal(a.tf.getBackend(), expected === 'wasm' ? 'wasm' : 'tensorflow');
  assert.equal(backendName(), expected);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, new RegExp(`^model backend: ${expected}( \\(skipped .*\\))?$`));
  if (!gpuLoads) {
    assert.match(lines[0]!, new RegExp(`skipped tensorflow-gpu: .*${skipReason(NATIVE.gpu).source}`));
  }
  if (expected === 'wasm')
    assert.match(lines[0]!, new RegExp(`; tensorflow: .*${skipReason(NATIVE.cpu).source}\\)$`));
  assert.deepEqual(a.tf.add(a.tf.tensor1d([1, 2]), 1).arraySync(), [2, 3]);
  await initBackend({ log });
  await initBackend({ log, force: expected });
  assert.equal(lines.length, 1, 'idempotent: logs once');
});

const unloadable = !cpuLoads ? 'tensorflow' : !gpuLoads ? 'tensorflow-gpu' : undefined;
test(
  'forcing a backend that cannot load is a typed error and changes nothing',
  { skip: unloadable === undefined && 'both native backends load here' },
  async () => {
    const before = backendName();
    const pkg = unloadable === 'tensorflow' ? NATIVE.cpu : NATIVE.gpu;
    await assert.rejects(
      () => initBackend({ force: unloadable, log: () => undefined }),
      (err: unknown) =>
        err instanceof BackendUnavailableError &&
        err.backend === unloadable &&
        err.message.includes(pkg) &&
        skipReason(pkg).test(err.message),
    );
    assert.equal(backendName(), before);
  },
);

test(
  "native TensorFlow's start-up lines stay off stderr unless asked for (but its oneDNN load notice)",
  { skip: !cpuLoads && 'tfjs-node is not built here (bash infra/install-native.sh)' },
  () => {
    const script = `require(${JSON.stringify(join(ROOT, 'model', 'backend'))}).initBackend({ force: 'tensorflow' })
      .then(({ tf }) => tf.matMul(tf.ones([64, 64]), tf.ones([64, 64])).dataSync())`;
    const run = (env: NodeJS.ProcessEnv) => {
      const clean = { ...process.env, ...env };
      for (const [k, v] of Object.entries(clean)) if (v === undefined) delete clean[k];
      const res = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
        cwd: ROOT,
        env: clean,
        encoding: 'utf8',
      });
      assert.equal(res.status, 0, res.stderr);
      return res.stderr.trim().split('\n');
    };
    // Printed while libtensorflow_framework loads, before any log level applies, unless oneDNN is off.
    const oneDnnNotice =
      /^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} .* port\.cc:\d+\] oneDNN custom operations are on)/;
    const quiet = run({ TF_CPP_MIN_LOG_LEVEL: undefined, TF_ENABLE_ONEDNN_OPTS: undefined });
    assert.deepEqual(
      quiet.filter((line) => !oneDnnNotice.test(line)),
      ['model backend: tensorflow'],
    );
    assert.deepEqual(run({ TF_CPP_MIN_LOG_LEVEL: undefined, TF_ENABLE_ONEDNN_OPTS: '0' }), [
      'model backend: tensorflow',
    ]);
    // The control: the same start-up with TensorFlow's own log level lowered does print its lines.
    const chatty = run({ TF_CPP_MIN_LOG_LEVEL: '0', TF_ENABLE_ONEDNN_OPTS: '0' });
    assert.ok(chatty.length > 1, `expected TensorFlow's own lines, got ${JSON.stringify(chatty)}`);
  },
);

test('forcing cpu switches backends, logs the switch, and prints no tfjs "Hi there" banner', async () => {
  const lines: string[] = [];
  const warn = console.warn;
  const warned: string[] = [];
  console.warn = (...args: unknown[]) => void warned.push(args.join(' '));
  try {
    const { name, tf } = await initBackend({ force: 'cpu', log: (m) => lines.push(m) });
    assert.equal(name, 'cpu');
    assert.equal(tf.getBackend(), 'cpu');
    assert.deepEqual(tf.add(tf.tensor1d([1, 2]), 1).arraySync(), [2, 3]);
  } finally {
    console.warn = warn;
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /cpu/);
  assert.deepEqual(
    warned.filter((w) => /tfjs-node|speed things up/.test(w)),
    [],
  );
});

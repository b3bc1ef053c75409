import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backendName, initBackend } from '../../model/backend';
import { BackendUnavailableError } from '../../model/errors';
import { installed } from '../helpers/installed';

const nativeInstalled = installed('@tensorflow/tfjs-node') || installed('@tensorflow/tfjs-node-gpu');

// One process per test file: these run in order against a fresh backend state.
test('without tfjs-node, wasm is chosen and named once in the log', { skip: nativeInstalled }, async () => {
  assert.equal(backendName(), undefined);
  const lines: string[] = [];
  const log = (m: string) => lines.push(m);
  const [a, b] = await Promise.all([initBackend({ log }), initBackend({ log })]);
  assert.equal(a.name, 'wasm');
  assert.equal(b, a);
  assert.equal(a.tf.getBackend(), 'wasm');
  assert.equal(backendName(), 'wasm');
  assert.equal(lines.length, 1);
  assert.match(
    lines[0]!,
    /^model backend: wasm \(skipped tensorflow-gpu: .*not installed; tensorflow: .*not installed\)$/,
  );
  await initBackend({ log });
  await initBackend({ log, force: 'wasm' });
  assert.equal(lines.length, 1, 'idempotent: logs once');
});

test('forcing a backend that cannot load is a typed error and changes nothing', async () => {
  const before = backendName();
  await assert.rejects(
    () => initBackend({ force: 'tensorflow', log: () => undefined }),
    (err: unknown) =>
      err instanceof BackendUnavailableError &&
      err.backend === 'tensorflow' &&
      /tfjs-node is not installed/.test(err.message),
  );
  assert.equal(backendName(), before);
});

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

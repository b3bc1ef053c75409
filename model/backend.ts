/**
 * Picks the tfjs compute backend once per process: native TensorFlow with GPU, native TensorFlow on CPU,
 * WebAssembly (XNNPACK, SIMD, single-threaded in Node) and finally tfjs's pure-JS 'cpu' kernels. The first that
 * loads wins. The native packages are optional peers (their binding is built by infra/install-native.sh or by
 * their own install script), so they are only required when present.
 */
import * as tfjs from '@tensorflow/tfjs';
import { BackendUnavailableError } from './errors';

export type BackendChoice = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_ORDER: readonly BackendChoice[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export type TF = typeof tfjs;

export interface Backend {
  /** Which choice runs: 'tensorflow-gpu', 'tensorflow', 'wasm' or 'cpu'. */
  name: BackendChoice;
  tf: TF;
}

export interface InitBackendOptions {
  /** Use exactly this backend; throws BackendUnavailableError when it cannot be loaded. */
  force?: BackendChoice;
  /** Where the one line naming the backend goes (default: a line on stderr). */
  log?: (msg: string) => void;
}

let current: Backend | undefined;
let pending: Promise<Backend> | undefined;

const defaultLog = (msg: string): void => {
  process.stderr.write(msg + '\n');
};

/** The backend chosen by initBackend, or undefined before it has run. */
export function backendName(): BackendChoice | undefined {
  return current?.name;
}

/** The active tfjs backend object (tf.backend()), or undefined before initBackend has run. */
export function activeBackend(): unknown {
  return current?.tf.backend();
}

/**
 * Loads and activates a backend. Idempotent: later calls return the same backend without logging again;
 * a later call that forces a different backend switches to it (and logs the switch).
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<Backend> {
  // Serialise concurrent callers so two initialisations never race on tf.setBackend.
  while (pending) await pending.catch(() => undefined);
  if (current && (options.force === undefined || options.force === current.name)) return current;
  pending = choose(options);
  try {
    return await pending;
  } finally {
    pending = undefined;
  }
}

async function choose(options: InitBackendOptions): Promise<Backend> {
  const log = options.log ?? defaultLog;
  const candidates = options.force ? [options.force] : BACKEND_ORDER;
  const skipped: string[] = [];
  for (const choice of candidates) {
    try {
      await activate(choice);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (options.force) {
        throw new BackendUnavailableError(choice, `backend '${choice}' is not available: ${reason}`, {
          field: 'backend',
          cause: err,
        });
      }
      skipped.push(`${choice}: ${reason}`);
      continue;
    }
    const previous = current?.name;
    current = { name: choice, tf: tfjs };
    const why = skipped.length > 0 ? ` (skipped ${skipped.join('; ')})` : '';
    log(previous ? `model backend: switched ${previous} -> ${choice}` : `model backend: ${choice}${why}`);
    return current;
  }
  // Unreachable in practice: the pure-JS 'cpu' backend is always registered by @tensorflow/tfjs.
  throw new BackendUnavailableError('any', `no tfjs backend could be loaded (${skipped.join('; ')})`);
}

async function activate(choice: BackendChoice): Promise<void> {
  switch (choice) {
    case 'tensorflow-gpu':
      loadOptional('@tensorflow/tfjs-node-gpu');
      return setBackend('tensorflow');
    case 'tensorflow':
      loadOptional('@tensorflow/tfjs-node');
      return setBackend('tensorflow');
    case 'wasm':
      // Registers the 'wasm' backend; in Node it loads the SIMD .wasm file that ships in the package.
      require('@tensorflow/tfjs-backend-wasm');
      return setBackend('wasm');
    case 'cpu':
      await setBackend('cpu');
      silenceNodeHint();
      return;
  }
}

/** require() of an optional peer, with "not installed" told apart from "installed but failed to load". */
function loadOptional(pkg: string): void {
  quietNativeStartup();
  const env = tfjs.env();
  const prod = env.getBool('PROD');
  // A native package registers its kernels before it loads its binding: when tfjs-node-gpu failed, tfjs-node
  // registers the same kernels again, and tfjs would warn once per kernel.
  env.set('PROD', true);
  try {
    // A variable, not a literal, so neither TypeScript nor a bundler tries to resolve the optional package.
    const name: string = pkg;
    require(name);
  } catch (err) {
    const code = (err as { code?: string }).code;
    const message = String((err as Error).message);
    if (code === 'MODULE_NOT_FOUND' && message.includes(pkg)) {
      throw new Error(`${pkg} is not installed`, { cause: err });
    }
    if (message.includes('tfjs_binding.node')) {
      throw new Error(`${pkg} has no native binding (build it: bash infra/install-native.sh)`, {
        cause: err,
      });
    }
    throw new Error(`${pkg} failed to load: ${message.split('\n')[0]}`, { cause: err });
  } finally {
    env.set('PROD', prod);
  }
}

/**
 * TensorFlow's C++ start-up lines (CPU features, devices) go straight to stderr. Keep its log to warnings and
 * up (TF_CPP_MIN_LOG_LEVEL=2) unless the user set a level (`ckpt --debug` sets 0). One notice escapes any
 * level: the "oneDNN custom operations are on" line that libtensorflow_framework prints while it is being
 * loaded. Only TF_ENABLE_ONEDNN_OPTS=0 removes it, and that costs speed on larger models (BENCHMARKS.md), so
 * it stays the user's choice.
 */
function quietNativeStartup(): void {
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
}

async function setBackend(name: string): Promise<void> {
  // A native package with its own nested copy of tfjs-core registers into that copy, not into ours.
  if (!tfjs.findBackendFactory(name)) {
    throw new Error(`backend '${name}' is not registered with this @tensorflow/tfjs (version mismatch?)`);
  }
  const ok = await tfjs.setBackend(name);
  if (!ok) throw new Error(`backend '${name}' failed to initialise`);
  await tfjs.ready();
}

/**
 * The 'cpu' backend prints a "Hi, looks like you are running TensorFlow.js in Node.js ... install our node
 * backend" banner on its first tensor. We already said which backend runs, so spend that first write with
 * warnings muted ('PROD' only gates tfjs's warn/log helpers) and restore the flag right after.
 */
function silenceNodeHint(): void {
  const env = tfjs.env();
  const prod = env.getBool('PROD');
  env.set('PROD', true);
  try {
    tfjs.tensor1d([0]).dispose();
  } finally {
    env.set('PROD', prod);
  }
}

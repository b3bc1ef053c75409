/**
 * The published package as another project gets it: `npm pack` (which builds dist/ through prepack) and a
 * fresh project that installs the tarball offline from the npm cache.
 *
 * Several test files use the tarball, and the test runner runs files in parallel: two `npm pack` at once
 * would rebuild dist/ under each other. So packing takes a lock (a directory under .tmp/pack, created
 * atomically), and the tarball is kept there under a fingerprint of every file git sees outside test/: a
 * second file, or a second run on unchanged sources, installs the same tarball without building again.
 *
 * The install is offline: the fresh project gets a lockfile derived from this repository's (the runtime
 * dependencies at the versions tested here, all in the npm cache since this repository was installed from
 * them). If the cache lacks something, it falls back to `npm install --prefer-offline`, which fetches only
 * what is missing.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');
export const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
export const NPX = process.platform === 'win32' ? 'npx.cmd' : 'npx';

// Children get a clean environment: no test-runner context, no settings of ours, no loader flags.
export const ENV: NodeJS.ProcessEnv = {
  ...Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) =>
        !k.startsWith('CKPT_') &&
        !k.startsWith('NODE_TEST') &&
        k !== 'NODE_OPTIONS' &&
        k !== 'RANK' &&
        k !== 'WORLD_SIZE',
    ),
  ),
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
};

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  cwd: string,
  timeoutMs = 180_000,
  env: NodeJS.ProcessEnv = ENV,
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
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

/** Run and require exit 0, failing with the command's output. */
export async function ok(
  cmd: string,
  args: string[],
  cwd: string,
  timeoutMs?: number,
  env?: NodeJS.ProcessEnv,
): Promise<Run> {
  const r = await run(cmd, args, cwd, timeoutMs, env);
  assert.equal(
    r.code,
    0,
    `${cmd} ${args.join(' ')} exited ${r.code}\n--- stdout\n${r.stdout.slice(-4000)}\n--- stderr\n${r.stderr.slice(-4000)}`,
  );
  return r;
}

interface LockEntry {
  version?: string;
  resolved?: string;
  dev?: boolean;
  link?: boolean;
  [key: string]: unknown;
}

/**
 * A lockfile for a project that depends only on the tarball: this repository's lock minus its dev-only
 * packages, with the tarball in place of the root. Entries without a `resolved` URL get the registry's,
 * so `npm ci --offline` finds every tarball in the cache by its integrity.
 */
function consumerLock(tarballName: string, tarball: Buffer): object {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  const packages: Record<string, unknown> = {
    '': { name: 'consumer', version: '1.0.0', dependencies: { [pkg.name as string]: `file:${tarballName}` } },
    [`node_modules/${pkg.name as string}`]: {
      version: pkg.version,
      resolved: `file:${tarballName}`,
      integrity: `sha512-${createHash('sha512').update(tarball).digest('base64')}`,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key === '' || entry.dev || entry.link) continue;
    const copy = { ...entry };
    if (!copy.resolved && copy.version) {
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
      copy.resolved = `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${copy.version}.tgz`;
    }
    packages[key] = copy;
  }
  return { name: 'consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

export interface Packed {
  /** Absolute path of the tarball (shared: copy it, never change it). */
  tarball: string;
  /** Its files, relative to the package root. */
  files: string[];
}

const CACHE = join(ROOT, '.tmp', 'pack');
const LOCK = join(CACHE, 'lock');

/**
 * sha256 over the path and content of every file git sees (tracked, or untracked and not ignored) outside
 * test/, plus HEAD; null without git (then every call packs).
 */
function sourceFingerprint(): string | null {
  let listed: string;
  try {
    listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
      cwd: ROOT,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch {
    return null;
  }
  const hash = createHash('sha256');
  for (const file of [...new Set(listed.split('\0').filter(Boolean))].sort()) {
    if (file.startsWith('test/')) continue;
    const path = join(ROOT, file);
    // A symlink (node_modules in a worktree) counts by its target, not what is behind it.
    const stat = lstatSync(path, { throwIfNoEntry: false });
    if (!stat || !(stat.isFile() || stat.isSymbolicLink())) continue;
    const content = stat.isSymbolicLink() ? readlinkSync(path) : readFileSync(path);
    hash.update(file).update('\0').update(content).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Hold the pack lock while `fn` runs; a lock whose holder has died is taken over. */
async function withPackLock<T>(fn: () => Promise<T>, timeoutMs = 600_000): Promise<T> {
  mkdirSync(CACHE, { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let holder = NaN;
      try {
        holder = Number(readFileSync(join(LOCK, 'pid'), 'utf8'));
      } catch {
        // Just created, pid not written yet: wait.
      }
      if (Number.isInteger(holder) && !alive(holder)) {
        rmSync(LOCK, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`npm pack: ${LOCK} held by process ${holder} for too long`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/** The package's tarball, packed from the current sources (once per fingerprint). */
export async function packedTarball(): Promise<Packed> {
  return withPackLock(async () => {
    const fingerprint = sourceFingerprint();
    const dir = fingerprint ? join(CACHE, fingerprint) : join(CACHE, `nofingerprint-${process.pid}`);
    let tarballName = existsSync(dir) ? readdirSync(dir).find((f) => f.endsWith('.tgz')) : undefined;
    if (!tarballName || !fingerprint) {
      const staging = join(CACHE, `staging-${process.pid}`);
      rmSync(staging, { recursive: true, force: true });
      mkdirSync(staging);
      const packed = await ok(NPM, ['pack', '--pack-destination', staging], ROOT, 300_000);
      tarballName = readdirSync(staging).find((f) => f.endsWith('.tgz'));
      assert.ok(tarballName, `npm pack left no tarball:\n${packed.stdout}\n${packed.stderr}`);
      // Older fingerprints are of sources that no longer exist.
      for (const old of readdirSync(CACHE)) {
        if (old !== 'lock' && old !== basename(staging))
          rmSync(join(CACHE, old), { recursive: true, force: true });
      }
      renameSync(staging, dir);
      process.stderr.write(`package test: packed ${tarballName}\n`);
    } else {
      process.stderr.write(`package test: reusing ${tarballName} packed from these sources\n`);
    }
    const tarball = join(dir, tarballName);
    const list = await ok('tar', ['-tzf', tarball], dir);
    const files = list.stdout
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));
    return { tarball, files };
  });
}

/**
 * A fresh project in `consumer` (created) whose only dependency is the tarball, installed offline from the
 * npm cache when it can be. tsx is removed from the installed tree: nothing in the package may need it.
 */
export async function installTarball(tarball: string, consumer: string): Promise<void> {
  const tarballName = basename(tarball);
  mkdirSync(consumer, { recursive: true });
  copyFileSync(tarball, join(consumer, tarballName));
  writeFileSync(
    join(consumer, 'package.json'),
    JSON.stringify(
      {
        name: 'consumer',
        version: '1.0.0',
        private: true,
        dependencies: { 'temporal-ckpt': `file:${tarballName}` },
      },
      null,
      2,
    ),
  );
  writeFileSync(
    join(consumer, 'package-lock.json'),
    JSON.stringify(consumerLock(tarballName, readFileSync(tarball)), null, 2),
  );
  const offline = await run(NPM, ['ci', '--offline', '--no-audit', '--no-fund'], consumer, 300_000);
  if (offline.code === 0) {
    process.stderr.write('package test: npm ci --offline installed the tarball from the npm cache\n');
  } else {
    // The cache lacks something: fetch only what is missing.
    process.stderr.write(
      `package test: npm ci --offline failed, falling back to --prefer-offline:\n${offline.stderr.slice(-1000)}\n`,
    );
    rmSync(join(consumer, 'package-lock.json'), { force: true });
    rmSync(join(consumer, 'node_modules'), { recursive: true, force: true });
    await ok(
      NPM,
      ['install', '--prefer-offline', '--no-audit', '--no-fund', `./${tarballName}`],
      consumer,
      300_000,
    );
  }
  rmSync(join(consumer, 'node_modules', 'tsx'), { recursive: true, force: true });
}

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** Whether an optional package (e.g. a native tfjs backend) can be required here. */
export function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a package loads in a fresh process (a native backend's binding may be missing although its
 * JavaScript is installed): the oracle, independent of model/backend.ts.
 */
export function loads(pkg: string): boolean {
  const res = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(pkg)})`], {
    cwd: join(__dirname, '..', '..'),
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3', TF_ENABLE_ONEDNN_OPTS: '0' },
    encoding: 'utf8',
  });
  return res.status === 0;
}

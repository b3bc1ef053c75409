/**
 * Machine facts and page-cache control for the benchmarks.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const DROP_CACHES = '/proc/sys/vm/drop_caches';

/** Flush dirty pages to disk (so one contender's writeback never lands in another's fsync). */
export function syncAll(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

/**
 * sync, then drop the page cache (clean pages, dentries, inodes). Needs root and a writable /proc/sys;
 * returns false (and drops nothing) where that is not allowed.
 */
export function dropCaches(): boolean {
  syncAll();
  try {
    writeFileSync(DROP_CACHES, '3\n');
    return true;
  } catch {
    return false;
  }
}

/** A full garbage collection, whether or not node was started with --expose-gc. */
export const fullGc: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

export interface MachineInfo {
  cpuModel: string;
  nproc: number;
  memoryGiB: number;
  node: string;
  os: string;
}

export function machineInfo(): MachineInfo {
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) cpuModel = line.split(':').slice(1).join(':').trim();
  } catch {
    // not Linux: keep os.cpus()
  }
  const nproc = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout?.trim()) || cpus().length;
  const uname = spawnSync('uname', ['-sr'], { encoding: 'utf8' }).stdout?.trim() ?? process.platform;
  return {
    cpuModel,
    nproc,
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    os: uname,
  };
}

/** The filesystem type a path lives on (from /proc/self/mounts: longest matching mount point). */
export function filesystemOf(path: string): string {
  try {
    let best = { point: '', type: 'unknown' };
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [, point, type] = line.split(' ');
      if (!point || !type) continue;
      const under = path === point || path.startsWith(point.endsWith('/') ? point : point + '/');
      if (under && point.length > best.point.length) best = { point, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

/** Peak resident set size (VmHWM) and current RSS (VmRSS) from /proc/self/status, in bytes. */
export function procMemory(): { hwm: number; rss: number } | null {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string): number => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
      return m ? Number(m[1]) * 1024 : NaN;
    };
    return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
  } catch {
    return null;
  }
}

/** Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs). */
export function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU seconds from /proc (Linux): of another process (the S3 server), and of one thread of this process
 * (the main thread, which the training loop runs on). On a loaded machine wall time mixes in other work;
 * CPU time says what a contender itself cost. Every function returns NaN where /proc is not readable.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Linux's USER_HZ: utime and stime in /proc/.../stat are in 1/100 s on every common build. */
const TICKS_PER_SECOND = 100;

function statCpuSeconds(statPath: string): number {
  try {
    const stat = readFileSync(statPath, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 (utime) and 15 (stime) overall are 12 and 13 after the name.
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** User + system CPU seconds of a process (all its threads). */
export function processCpuSeconds(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/** User + system CPU seconds of this process's main thread only (its thread id is the process id). */
export function mainThreadCpuSeconds(): number {
  return statCpuSeconds(`/proc/self/task/${process.pid}/stat`);
}

/** The id of a process whose command line contains every one of `parts` (the first found), or null. */
export function findProcess(parts: readonly string[]): number | null {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return null;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ');
      if (parts.every((p) => cmdline.includes(p))) return Number(name);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return null;
}

/** Small process helpers for tests. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Child processes of `pid` (e.g. the training child and the warm standby of a worker). */
export function childPids(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when there is none
  }
}

/** CPU time (user + system, in clock ticks) a process has used so far; null once it is gone (Linux). */
export function cpuTicks(pid: number): number | null {
  try {
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the
    // 12th and 13th of them.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

/**
 * Children of `pid` that use the CPU over `sampleMs` (a training child), leaving out idle ones (a warm
 * standby waiting for its command).
 */
export async function busyChildren(pid: number, sampleMs = 500): Promise<number[]> {
  const before = new Map(childPids(pid).map((child) => [child, cpuTicks(child)]));
  await new Promise((resolve) => setTimeout(resolve, sampleMs));
  return [...before]
    .filter(([child, ticks]) => {
      const now = cpuTicks(child);
      return ticks !== null && now !== null && now > ticks;
    })
    .map(([child]) => child);
}

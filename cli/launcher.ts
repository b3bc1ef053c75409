/**
 * `ckpt train --nproc W`: a local launcher like torchrun. Starts W rank processes of the same command with
 * RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; only rank 0's output is shown (log0). Each rank holds an
 * IPC channel to the launcher and exits when it closes, so if the launcher dies its ranks die with it. If
 * one rank fails, the others are stopped and the launcher exits with the failing rank's code.
 *
 * A refusal (bad flags, a program that cannot run on several ranks) is reached by every rank at about the
 * same moment; the person sees it once. When rank 0 said it, the launcher says nothing more; when another
 * rank failed first and rank 0 was stopped before saying anything, the launcher repeats that rank's error
 * line, naming the rank.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../infra/temporal';

const BIN = join(__dirname, '..', 'bin', 'ckpt.js');
const ERROR_PREFIX = 'ckpt: error: ';

/** The last `ckpt: error:` line in a rank's stderr, without the prefix, or the last line at all. */
function errorOf(stderr: string): { message: string; typed: boolean } {
  const lines = stderr.trim().split('\n');
  const typed = lines.filter((l) => l.startsWith(ERROR_PREFIX)).pop();
  return typed !== undefined
    ? { message: typed.slice(ERROR_PREFIX.length), typed: true }
    : { message: lines.pop() ?? '', typed: false };
}

export async function launchRanks(argv: string[], worldSize: number): Promise<number> {
  const port = await freePort();
  const children: ChildProcess[] = [];
  const exits: Array<Promise<number>> = [];
  const stderrs: string[] = [];
  // On a terminal rank 0 keeps the terminal (its progress line); otherwise its stderr passes through here,
  // so that the launcher knows what it said.
  const passThrough = !process.stderr.isTTY;
  let firstFailure: { rank: number; status: number } | null = null;
  for (let rank = 0; rank < worldSize; rank++) {
    const child = spawn(process.execPath, [BIN, ...argv], {
      stdio:
        rank === 0
          ? ['ignore', 'inherit', passThrough ? 'pipe' : 'inherit', 'ipc']
          : ['ignore', 'ignore', 'pipe', 'ipc'],
      env: {
        ...process.env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(rank),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
      },
    });
    stderrs.push('');
    child.stderr?.on('data', (d: Buffer) => {
      if (rank === 0) process.stderr.write(d);
      stderrs[rank] = (stderrs[rank] + d.toString()).slice(-4000);
    });
    children.push(child);
    exits.push(
      new Promise((resolve) =>
        child.on('close', (code, signal) => {
          const status = code ?? (signal ? 128 + 9 : 1);
          if (status !== 0 && firstFailure === null) {
            firstFailure = { rank, status };
            // One rank down means the collective is broken; stop the others now instead of at their timeout.
            for (const other of children)
              if (other !== child && other.exitCode === null) other.kill('SIGTERM');
          }
          resolve(status);
        }),
      ),
    );
  }
  const forward = (signal: NodeJS.Signals) => () => children.forEach((c) => c.kill(signal));
  process.once('SIGINT', forward('SIGTERM'));
  process.once('SIGTERM', forward('SIGTERM'));
  const codes = await Promise.all(exits);
  const failed = firstFailure as { rank: number; status: number } | null;
  if (failed !== null && failed.rank !== 0) {
    const cause = errorOf(stderrs[failed.rank]!);
    const rank0 = errorOf(stderrs[0]!);
    const saidByRank0 = passThrough ? rank0.typed && rank0.message === cause.message : false;
    if (!saidByRank0)
      process.stderr.write(
        cause.typed
          ? `${ERROR_PREFIX}${cause.message} (rank ${failed.rank})\n`
          : `${ERROR_PREFIX}rank ${failed.rank} failed (exit ${failed.status}): ${cause.message}\n`,
      );
  }
  return failed?.status ?? codes.find((c) => c !== 0) ?? 0;
}

/**
 * `ckpt train --nproc W`: a local launcher like torchrun. Starts W rank processes of the same command with
 * RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; only rank 0's output is shown (log0). Each rank holds an
 * IPC channel to the launcher and exits when it closes, so if the launcher dies its ranks die with it. If
 * one rank fails, the others are stopped and the launcher exits with the failing rank's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../infra/temporal';
import { note } from './args';

const BIN = join(__dirname, '..', 'bin', 'ckpt.js');

export async function launchRanks(argv: string[], worldSize: number): Promise<number> {
  const port = await freePort();
  const children: ChildProcess[] = [];
  const exits: Array<Promise<number>> = [];
  let firstFailure: number | null = null;
  for (let rank = 0; rank < worldSize; rank++) {
    const child = spawn(process.execPath, [BIN, ...argv], {
      stdio: rank === 0 ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'ignore', 'pipe', 'ipc'],
      env: {
        ...process.env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(rank),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
      },
    });
    let errors = '';
    child.stderr?.on('data', (d: Buffer) => (errors = (errors + d.toString()).slice(-4000)));
    children.push(child);
    exits.push(
      new Promise((resolve) =>
        child.on('close', (code, signal) => {
          const status = code ?? (signal ? 128 + 9 : 1);
          if (status !== 0 && firstFailure === null) {
            firstFailure = status;
            if (rank !== 0)
              note(`rank ${rank} failed (exit ${status}): ${errors.trim().split('\n').pop() ?? ''}`);
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
  return firstFailure ?? codes.find((c) => c !== 0) ?? 0;
}

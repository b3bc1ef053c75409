/**
 * Runs a `ckpt` command in a child process for an activity. tfjs kernels block the event loop and keep
 * global state, so training and evaluation run in a child: the worker's event loop stays free to heartbeat,
 * and a child that dies takes nothing else with it. The child gets an IPC channel and exits when it closes,
 * so a killed worker never leaves an orphan training on.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const BIN = join(__dirname, '..', 'bin', 'ckpt.js');

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderrTail: string;
}

export interface ChildOptions {
  /** Each stdout line parsed as JSON (lines that are not JSON are kept in stdout only). */
  onEvent?: (event: Record<string, unknown>) => void;
  /** Called every `tickMs` while the child runs (heartbeats). */
  onTick?: () => void;
  tickMs?: number;
  /** Abort → SIGTERM (the child stops at a step boundary), then SIGKILL after `killGraceMs`. */
  signal?: AbortSignal;
  killGraceMs?: number;
  env?: NodeJS.ProcessEnv;
}

export function runCkpt(args: string[], options: ChildOptions = {}): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, CKPT_LOG_FORMAT: 'json', ...options.env },
    });
    let stdout = '';
    let stderr = '';
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      stdout += line + '\n';
      if (!options.onEvent || !line.startsWith('{')) return;
      try {
        options.onEvent(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not an event line
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8000);
    });
    const tick = options.onTick ? setInterval(options.onTick, options.tickMs ?? 1000) : undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), options.killGraceMs ?? 30_000);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      if (tick) clearInterval(tick);
      reject(err);
    });
    child.on('close', (code, signal) => {
      if (tick) clearInterval(tick);
      if (killTimer) clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', onAbort);
      resolve({ code, signal, stdout, stderrTail: lastErrorLine(stderr) });
    });
  });
}

/** The child's one-line error ("ckpt: error: …"), else the last lines of stderr. */
function lastErrorLine(stderr: string): string {
  const match = stderr.match(/ckpt: error: .*$/m);
  if (match) return match[0].replace(/^ckpt: error: /, '');
  return stderr.trim().split('\n').slice(-5).join('\n');
}

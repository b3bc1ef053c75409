/**
 * A TCP proxy on 127.0.0.1 that caps each connection's server-to-client rate (a token bucket without
 * burst credit), for bench/s3.ts: one HTTP connection to a remote S3 endpoint is limited by its latency and
 * window to some tens of MiB/s, which is what parallel ranged GETs are for; loopback has no such limit.
 * Runs as its own process so its CPU time is not the client's:
 *   node --import tsx bench/lib/throttle-proxy.ts <target port> <bytes per second per connection>
 * prints the port it listens on, then serves until killed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';

function serve(targetPort: number, bytesPerSecond: number): void {
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    client.pipe(upstream);
    // When the next byte may leave (ms); idle time earns no credit, so a reused connection never bursts.
    let next = 0;
    upstream.on('data', (chunk: Buffer) => {
      const now = performance.now();
      next = Math.max(next, now) + (chunk.byteLength / bytesPerSecond) * 1000;
      const wait = next - now;
      const ok = client.write(chunk);
      if (wait > 1 || !ok) {
        upstream.pause();
        const resume = () => setTimeout(() => upstream.resume(), Math.max(0, next - performance.now()));
        if (ok) resume();
        else client.once('drain', resume);
      }
    });
    upstream.on('end', () => client.end());
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.stdout.write(`${typeof addr === 'object' && addr ? addr.port : 0}\n`);
  });
}

/** Start the proxy in a child process; resolves with its port and a way to stop it. */
export async function startThrottleProxy(
  targetPort: number,
  bytesPerSecond: number,
): Promise<{ port: number; stop: () => void }> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', __filename, String(targetPort), String(bytesPerSecond)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  if (!Number.isInteger(port) || port <= 0) {
    child.kill('SIGKILL');
    throw new Error(`throttle proxy did not start: ${line.toString()}`);
  }
  return {
    port,
    stop: () => {
      process.removeListener('exit', reap);
      child.kill('SIGTERM');
    },
  };
}

if (require.main === module) serve(Number(process.argv[2]), Number(process.argv[3]));

#!/usr/bin/env node
// Entry point of the `ckpt` command. It runs from three places:
//   - the repository: bin/ckpt.js beside the TypeScript sources, which run through tsx's loader (so a
//     stale dist/ never shadows the code being edited);
//   - the compiled tree: dist/bin/ckpt.js (what activities and the rank launcher spawn from an installed
//     package), beside dist/cli/main.js;
//   - the installed package's bin: bin/ckpt.js beside dist/ (no sources are shipped), or a checkout whose
//     tsx is not installed but which has been built.
const { existsSync } = require('node:fs');
const { join } = require('node:path');

function canLoadTsx() {
  try {
    require.resolve('tsx/cjs');
    return true;
  } catch {
    return false;
  }
}

function entry() {
  const up = join(__dirname, '..');
  const sources = join(up, 'cli', 'main.ts');
  const sibling = join(up, 'cli', 'main.js');
  const built = join(up, 'dist', 'cli', 'main.js');
  if (existsSync(sources) && (canLoadTsx() || !existsSync(built))) {
    require('tsx/cjs');
    return sources;
  }
  if (existsSync(sibling)) return sibling;
  return built;
}

// A worker sends a training child its settings as one message (train/request.ts): kept here from the
// start, since it can arrive before the command has loaded.
let ipcRequest;
const ipcWaiters = [];
function keepRequest(request) {
  ipcRequest = request;
  for (const resolve of ipcWaiters.splice(0)) resolve(request);
}
globalThis.ckptIpcRequest = () =>
  ipcRequest !== undefined ? Promise.resolve(ipcRequest) : new Promise((resolve) => ipcWaiters.push(resolve));

function run(cli, argv) {
  cli.main(argv).then((code) => {
    process.exitCode = code;
  });
}

if (process.env.CKPT_STANDBY === '1' && process.send) {
  // A warm standby started by a worker (activities/child.ts): load the code now, then wait for the
  // command over IPC. The worker going away ends the standby, like any child it started.
  delete process.env.CKPT_STANDBY;
  process.once('disconnect', () => process.exit(137));
  let cli;
  process.once('message', (msg) => {
    if (!msg || msg.type !== 'run' || !Array.isArray(msg.argv)) process.exit(2);
    process.argv = [process.argv[0], process.argv[1], ...msg.argv];
    if (msg.request !== undefined) keepRequest(msg.request);
    // From here on the channel only watches the parent, as for a child started with its command.
    if (process.channel) process.channel.unref();
    cli = cli || require(entry());
    run(cli, msg.argv);
  });
  process.nextTick(() => {
    cli = cli || require(entry());
    if (cli.preload) cli.preload();
  });
} else {
  if (process.send && process.argv.includes('--from-ipc')) {
    process.once('message', (msg) => {
      if (msg && msg.type === 'request') keepRequest(msg.request);
    });
  }
  run(require(entry()), process.argv.slice(2));
}

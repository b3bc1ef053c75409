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

require(entry())
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });

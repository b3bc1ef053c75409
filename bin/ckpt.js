#!/usr/bin/env node
// Entry point of the `ckpt` command: runs the TypeScript CLI through tsx's loader.
require('tsx/cjs');
require('../cli/main.ts')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });

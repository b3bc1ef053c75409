// Worker-thread entry of AsyncSaver: loads the TypeScript sources through tsx (or the compiled sibling).
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const compiled = join(__dirname, 'async-save-worker.js');
if (!existsSync(compiled)) require('tsx/cjs');
require(existsSync(compiled) ? compiled : join(__dirname, 'async-save-worker.ts'));

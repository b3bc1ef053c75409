/**
 * Local store failures that can pass (disk full, I/O errors of a network filesystem) are
 * TransientStoreError, exit 1, which activities retry; others (permission denied) stay StoreError, exit 2.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { LocalStore, StoreError, TransientStoreError } from '../../checkpoint';
import { tempDir } from '../helpers/tmp';

function failingSource(code: string): AsyncIterable<Uint8Array> {
  return (async function* () {
    yield new Uint8Array(1024);
    const err: NodeJS.ErrnoException = new Error(`${code}: injected, write`);
    err.code = code;
    throw err;
  })();
}

describe('local store errors', () => {
  for (const [code, transient] of [
    ['ENOSPC', true],
    ['EIO', true],
    ['EACCES', false],
  ] as const) {
    it(`${code} during a put is ${transient ? 'TransientStoreError (exit 1)' : 'StoreError (exit 2)'}, names the file and leaves nothing`, async () => {
      const dir = tempDir();
      const store = new LocalStore(dir);
      const err = await store.put('model_000010.safetensors', failingSource(code)).then(
        () => assert.fail('the put succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof StoreError, String(err));
      assert.equal(err instanceof TransientStoreError, transient);
      assert.equal(err.exitCode, transient ? 1 : 2);
      assert.equal(err.code, code);
      assert.equal(err.file, 'model_000010.safetensors');
      if (code === 'ENOSPC') assert.match(err.message, /disk full/);
      assert.deepEqual(readdirSync(dir), [], 'no temp file left');
    });
  }
});

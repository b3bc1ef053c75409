import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { InvalidArgumentError } from '../../checkpoint/errors';
import {
  CORRUPT_LEASE_GRACE_MS,
  LeaseLostError,
  activeLeases,
  expiredLeaseKeys,
  leaseKey,
  releaseLease,
  renewLease,
  scanLeases,
  takeLease,
  withLease,
} from '../../checkpoint/lease';
import { LocalStore } from '../../checkpoint/local-store';
import { parseFileName } from '../../checkpoint/names';

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const MIN = 60_000;
const opts = { holder: 'eval-worker', ttlMs: 10 * MIN, now: () => T0 };

let dir: string;
let store: LocalStore;
beforeEach(async () => {
  dir = await fs.mkdtemp(join(tmpdir(), 'lease-test-'));
  store = new LocalStore(dir);
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('takeLease', () => {
  it('writes a lease file that names.ts recognizes and activeLeases returns', async () => {
    const lease = await takeLease(store, 1_000_000, opts);
    assert.match(lease.id, /^[0-9a-f]+$/);
    assert.equal(lease.expiresAt, new Date(T0 + 10 * MIN).toISOString());
    const files = await fs.readdir(dir);
    assert.deepEqual(files, [`lease_1000000_${lease.id}.json`]);
    assert.deepEqual(parseFileName(files[0] ?? ''), { kind: 'lease', step: 1_000_000 });
    assert.deepEqual(JSON.parse(await fs.readFile(join(dir, files[0] ?? ''), 'utf8')), lease);
    assert.deepEqual(await activeLeases(store, T0), [lease]);
  });
  it('gives each lease its own file', async () => {
    const a = await takeLease(store, 5, opts);
    const b = await takeLease(store, 5, opts);
    assert.notEqual(a.id, b.id);
    assert.equal((await activeLeases(store, T0)).length, 2);
  });
  it('rejects bad input', async () => {
    await assert.rejects(takeLease(store, -1, opts), InvalidArgumentError);
    await assert.rejects(takeLease(store, 1, { ...opts, holder: '' }), InvalidArgumentError);
    await assert.rejects(takeLease(store, 1, { ...opts, ttlMs: 0 }), InvalidArgumentError);
    await assert.rejects(takeLease(store, 1, { ...opts, ttlMs: NaN }), InvalidArgumentError);
    assert.throws(() => leaseKey(1, '../x'), InvalidArgumentError);
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

describe('expiry', () => {
  it('is active before expiresAt and collectable from then on', async () => {
    const lease = await takeLease(store, 7, opts);
    const end = Date.parse(lease.expiresAt);
    assert.equal((await activeLeases(store, end - 1)).length, 1);
    assert.deepEqual(await expiredLeaseKeys(store, end - 1), []);
    assert.deepEqual(await activeLeases(store, end), []);
    assert.deepEqual(await expiredLeaseKeys(store, end), [leaseKey(7, lease.id)]);
  });
  it('ignores files that are not leases', async () => {
    await fs.writeFile(join(dir, 'manifest_000007.json'), '{}');
    await fs.writeFile(join(dir, '.tmp-lease_000007_x.json.1.ab'), 'partial');
    assert.deepEqual(await scanLeases(store, T0), { active: [], expired: [], warnings: [] });
  });
});

describe('corrupt lease files', () => {
  for (const [what, body] of [
    ['invalid JSON', '{"step": 12'],
    [
      'a step that does not match the name',
      JSON.stringify({ step: 13, holder: 'h', id: 'bad', expiresAt: 'x' }),
    ],
    ['a bad expiresAt', JSON.stringify({ step: 12, holder: 'h', id: 'bad', expiresAt: 'soon' })],
  ]) {
    it(`${what}: active for a day after its mtime, then collectable`, async () => {
      await fs.writeFile(join(dir, 'lease_000012_bad.json'), body ?? '');
      const mtime = (await fs.stat(join(dir, 'lease_000012_bad.json'))).mtimeMs;
      const scan = await scanLeases(store, mtime + CORRUPT_LEASE_GRACE_MS - 1);
      assert.deepEqual(
        scan.active.map((l) => [l.step, l.id]),
        [[12, 'bad']],
      );
      assert.equal(scan.warnings.length, 1);
      const later = await scanLeases(store, mtime + CORRUPT_LEASE_GRACE_MS);
      assert.deepEqual(later.active, []);
      assert.deepEqual(later.expired, ['lease_000012_bad.json']);
    });
  }
});

describe('renewLease', () => {
  it('pushes the expiry and rewrites the file', async () => {
    const lease = await takeLease(store, 3, opts);
    const renewed = await renewLease(store, lease, 30 * MIN, T0 + 5 * MIN);
    assert.equal(renewed.expiresAt, new Date(T0 + 35 * MIN).toISOString());
    assert.deepEqual({ ...renewed, expiresAt: lease.expiresAt }, lease);
    assert.deepEqual(await activeLeases(store, T0 + 20 * MIN), [renewed]);
  });
  it('refuses an expired lease', async () => {
    const lease = await takeLease(store, 3, opts);
    await assert.rejects(renewLease(store, lease, MIN, T0 + 10 * MIN), LeaseLostError);
  });
  it('refuses a released lease instead of recreating it', async () => {
    const lease = await takeLease(store, 3, opts);
    await releaseLease(store, lease);
    await assert.rejects(renewLease(store, lease, MIN, T0), LeaseLostError);
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

describe('releaseLease', () => {
  it('removes only that lease, and a second release is harmless', async () => {
    const a = await takeLease(store, 3, opts);
    const b = await takeLease(store, 3, opts);
    await releaseLease(store, a);
    await releaseLease(store, a);
    assert.deepEqual(await activeLeases(store, T0), [b]);
  });
});

describe('withLease', () => {
  it('holds the lease while fn runs and releases it after', async () => {
    const result = await withLease(store, 9, opts, async (lease) => {
      assert.deepEqual(await activeLeases(store, T0), [lease]);
      return 42;
    });
    assert.equal(result, 42);
    assert.deepEqual(await fs.readdir(dir), []);
  });
  it('releases the lease when fn throws and rethrows the error', async () => {
    const boom = new Error('eval failed');
    await assert.rejects(
      withLease(store, 9, opts, async () => {
        throw boom;
      }),
      (err) => err === boom,
    );
    assert.deepEqual(await fs.readdir(dir), []);
  });
});

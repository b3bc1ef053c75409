/**
 * Read leases. A reader (evaluation, export, a resume elsewhere) writes a small lease file next to the
 * checkpoints, and retention keeps every step with an active lease. Leases expire, so a crashed reader cannot
 * pin a step forever; a long reader renews its lease well before it runs out.
 *
 * A pruner must list leases right before it deletes: a lease taken after that listing is not seen.
 */
import { randomBytes } from 'node:crypto';
import { CheckpointError, InvalidArgumentError, SchemaError, describeError } from './errors';
import { warn0 } from './log';
import { padStep, validateStep } from './names';
import type { Store } from './store';

export interface Lease {
  step: number;
  holder: string;
  id: string;
  /** ISO 8601. */
  expiresAt: string;
}

/** The lease is gone or expired, so the checkpoint may already be pruned: take a new lease and re-check. */
export class LeaseLostError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/**
 * A lease file we cannot read or parse may still be a live reader's (a partial copy, a newer writer's
 * format): pruning its step could break that reader. So it counts as active for a day after its last write,
 * then garbage collection may remove it — a day is far longer than any renewal interval.
 */
export const CORRUPT_LEASE_GRACE_MS = 24 * 60 * 60 * 1000;

const LEASE_RE = /^lease_(\d{6,})_([A-Za-z0-9_-]+)\.json$/;
const ID_RE = /^[A-Za-z0-9_-]+$/;
const MAX_HOLDER = 256;

export function leaseKey(step: number, id: string): string {
  if (!ID_RE.test(id)) {
    throw new InvalidArgumentError(`lease id "${id}" must match ${ID_RE}`, { field: 'id', step });
  }
  return `lease_${padStep(validateStep(step))}_${id}.json`;
}

function expiry(nowMs: number, ttlMs: number): string {
  const t = typeof ttlMs === 'number' && ttlMs > 0 ? new Date(nowMs + ttlMs) : undefined;
  if (t === undefined || !Number.isFinite(t.getTime())) {
    throw new InvalidArgumentError(`ttlMs must be a positive number of milliseconds, got ${ttlMs}`, {
      field: 'ttlMs',
    });
  }
  return t.toISOString();
}

function encode(lease: Lease): Buffer {
  return Buffer.from(JSON.stringify(lease, null, 2) + '\n');
}

/** The lease in `bytes`, or why it is not a valid lease for the step and id in its file name. Extra fields are allowed. */
function parseLease(bytes: Buffer, step: number, id: string): Lease | string {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return `invalid JSON (${describeError(err)})`;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a JSON object';
  const o = v as Record<string, unknown>;
  if (o.step !== step) return `step ${String(o.step)} does not match the file name`;
  if (o.id !== id) return `id ${JSON.stringify(o.id)} does not match the file name`;
  if (typeof o.holder !== 'string' || o.holder === '') return 'holder must be a non-empty string';
  if (typeof o.expiresAt !== 'string' || !Number.isFinite(Date.parse(o.expiresAt))) {
    return 'expiresAt must be an ISO date';
  }
  return { step, holder: o.holder, id, expiresAt: o.expiresAt };
}

export async function takeLease(
  store: Store,
  step: number,
  opts: { holder: string; ttlMs: number; now?: () => number },
): Promise<Lease> {
  validateStep(step);
  if (typeof opts.holder !== 'string' || opts.holder === '' || opts.holder.length > MAX_HOLDER) {
    throw new InvalidArgumentError(`holder must be a non-empty string of at most ${MAX_HOLDER} characters`, {
      field: 'holder',
      step,
    });
  }
  const lease: Lease = {
    step,
    holder: opts.holder,
    id: randomBytes(8).toString('hex'),
    expiresAt: expiry((opts.now ?? Date.now)(), opts.ttlMs),
  };
  await store.put(leaseKey(step, lease.id), encode(lease), { exclusive: true });
  return lease;
}

/** Releasing a lease that is already gone (expired and collected) is not an error. */
export async function releaseLease(store: Store, lease: Lease): Promise<void> {
  await store.delete(leaseKey(lease.step, lease.id));
}

/** Pushes the expiry to now + ttlMs. Refuses a lease that is gone or expired: its step may be pruned. */
export async function renewLease(
  store: Store,
  lease: Lease,
  ttlMs: number,
  now = Date.now(),
): Promise<Lease> {
  const key = leaseKey(lease.step, lease.id);
  const expiresAt = expiry(now, ttlMs);
  let bytes: Buffer;
  try {
    bytes = await store.read(key);
  } catch (err) {
    if (await store.exists(key)) throw err;
    throw new LeaseLostError(`lease ${key} no longer exists (released, or expired and collected)`, {
      file: key,
      step: lease.step,
    });
  }
  const current = parseLease(bytes, lease.step, lease.id);
  if (typeof current === 'string') {
    throw new SchemaError(`lease ${key}: ${current}`, { file: key, step: lease.step });
  }
  if (Date.parse(current.expiresAt) <= now) {
    throw new LeaseLostError(
      `lease ${key} expired at ${current.expiresAt}; step ${lease.step} may be pruned`,
      {
        file: key,
        step: lease.step,
      },
    );
  }
  const renewed: Lease = { ...current, expiresAt };
  await store.put(key, encode(renewed));
  return renewed;
}

export interface LeaseScan {
  /** Unexpired leases, plus a stand-in for each unreadable lease file still in its grace period. */
  active: Lease[];
  /** Lease files garbage collection may delete. */
  expired: string[];
  warnings: string[];
}

/** Reads every lease file in the store's root. */
export async function scanLeases(store: Store, now = Date.now()): Promise<LeaseScan> {
  const scan: LeaseScan = { active: [], expired: [], warnings: [] };
  for (const entry of await store.list('')) {
    const m = LEASE_RE.exec(entry.key);
    if (!m || m[1] === undefined || m[2] === undefined) continue;
    const [step, id] = [Number(m[1]), m[2]];
    let lease: Lease | string;
    try {
      lease = parseLease(await store.read(entry.key), step, id);
    } catch (err) {
      if (!(await store.exists(entry.key).catch(() => true))) continue; // released while we listed
      lease = `unreadable (${describeError(err)})`;
    }
    if (typeof lease === 'string') {
      const until = entry.mtimeMs + CORRUPT_LEASE_GRACE_MS;
      if (until > now) {
        const expiresAt = new Date(until).toISOString();
        scan.warnings.push(`lease ${entry.key}: ${lease}; step ${step} treated as leased until ${expiresAt}`);
        scan.active.push({ step, holder: 'unknown (unreadable lease file)', id, expiresAt });
      } else {
        scan.warnings.push(`lease ${entry.key}: ${lease}; older than its grace period, treated as expired`);
        scan.expired.push(entry.key);
      }
    } else if (Date.parse(lease.expiresAt) > now) {
      scan.active.push(lease);
    } else {
      scan.expired.push(entry.key);
    }
  }
  scan.active.sort((a, b) => a.step - b.step || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return scan;
}

function logWarnings(scan: LeaseScan): LeaseScan {
  for (const w of scan.warnings) warn0(w);
  return scan;
}

export async function activeLeases(store: Store, now = Date.now()): Promise<Lease[]> {
  return logWarnings(await scanLeases(store, now)).active;
}

export async function expiredLeaseKeys(store: Store, now = Date.now()): Promise<string[]> {
  return logWarnings(await scanLeases(store, now)).expired;
}

/** Runs `fn` under a lease and always releases it; a failed release only warns (the lease expires anyway). */
export async function withLease<T>(
  store: Store,
  step: number,
  opts: { holder: string; ttlMs: number; now?: () => number },
  fn: (lease: Lease) => Promise<T>,
): Promise<T> {
  const lease = await takeLease(store, step, opts);
  try {
    return await fn(lease);
  } finally {
    await releaseLease(store, lease).catch((err) => {
      warn0(
        `could not release lease on step ${step}: ${describeError(err)}; it expires at ${lease.expiresAt}`,
      );
    });
  }
}

/**
 * Pipeline claims: one pipeline per checkpoint directory, whatever its workflow id. `ckpt pipeline start`
 * creates `claim.json` in the directory (exclusively) before it starts the workflow; the workflow removes
 * it when it ends. A claim whose workflow has closed without removing it (terminated, or its server lost)
 * is stale: only `--take-over` replaces it. The writer lease (writer.ts) guards each training segment; the
 * claim guards the directory between segments, while the pipeline evaluates, waits or is paused.
 *
 * Whether a workflow still runs is the Temporal server's to say; this module only reads and writes the
 * record (cli/claims.ts asks the server).
 */
import { hostname } from 'node:os';
import { InvalidArgumentError, SchemaError } from './errors';
import { openStore, type Location } from './location';
import { AlreadyExistsError, type Store } from './store';

export const CLAIM_FILE = 'claim.json';

export interface Claim {
  /** The pipeline's workflow id (kept across continue-as-new and resets). */
  workflow_id: string;
  namespace: string;
  /** The Temporal server the pipeline was started on. */
  address: string;
  claimed_at: string;
  /** Host that started it, for people. */
  by: string;
}

export function newClaim(workflowId: string, namespace: string, address: string): Claim {
  return {
    workflow_id: workflowId,
    namespace,
    address,
    claimed_at: new Date().toISOString(),
    by: `${hostname()} pid ${process.pid}`,
  };
}

function encode(claim: Claim): Buffer {
  return Buffer.from(JSON.stringify(claim, null, 2) + '\n');
}

/** The directory's claim, or null when it has none. */
export async function readClaim(location: Location | Store): Promise<Claim | null> {
  const store = typeof location === 'object' && 'put' in location ? location : openStore(location);
  if (!(await store.exists(CLAIM_FILE))) return null;
  const bytes = await store.read(CLAIM_FILE);
  try {
    const claim = JSON.parse(bytes.toString('utf8')) as Claim;
    if (typeof claim.workflow_id === 'string' && claim.workflow_id !== '') return claim;
  } catch {
    // below
  }
  throw new SchemaError(
    `${store.location}/${CLAIM_FILE} is not a pipeline claim; remove it or pass --take-over`,
    {
      file: CLAIM_FILE,
    },
  );
}

/** Create the claim; false when the directory already has one (nothing changed then). */
export async function createClaim(location: Location, claim: Claim): Promise<boolean> {
  try {
    await openStore(location).put(CLAIM_FILE, encode(claim), { exclusive: true });
    return true;
  } catch (err) {
    if (err instanceof AlreadyExistsError) return false;
    throw err;
  }
}

/** Replace a stale claim (`--take-over`): only the one read as stale, never a claim made since. */
export async function replaceClaim(location: Location, stale: Claim, claim: Claim): Promise<void> {
  const store = openStore(location);
  const now = await readClaim(store).catch(() => null);
  if (now && now.workflow_id !== stale.workflow_id) {
    throw new InvalidArgumentError(
      `${store.location} was claimed by pipeline ${now.workflow_id} meanwhile; nothing was taken over`,
      { file: CLAIM_FILE, field: 'take-over' },
    );
  }
  await store.delete(CLAIM_FILE);
  if (!(await createClaim(location, claim))) {
    throw new InvalidArgumentError(`${store.location} was claimed by another pipeline meanwhile`, {
      file: CLAIM_FILE,
      field: 'take-over',
    });
  }
}

/** Remove the claim if it is `workflowId`'s (a pipeline ending); returns whether it removed one. */
export async function releaseClaim(location: Location, workflowId: string): Promise<boolean> {
  const store = openStore(location);
  const claim = await readClaim(store).catch(() => null);
  if (claim?.workflow_id !== workflowId) return false;
  await store.delete(CLAIM_FILE);
  return true;
}

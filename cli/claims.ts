/**
 * The CLI's side of pipeline claims (checkpoint/claim.ts): `pipeline start` claims the directory before
 * it starts the workflow, and `ckpt train` refuses a directory a running pipeline holds. Whether the
 * claiming workflow still runs is asked of the Temporal server.
 */
import type { Client } from '@temporalio/client';
import {
  CLAIM_FILE,
  createClaim,
  currentWriter,
  mayStillWrite,
  newClaim,
  readClaim,
  replaceClaim,
  releaseClaim,
  WriterConflictError,
  type Claim,
  type Location,
} from '../checkpoint';
import { warn0 } from '../checkpoint/log';
import { openStore as openStoreOf } from '../checkpoint/location';
import type { TemporalSettings } from '../temporal.config';

export type ClaimState = 'running' | 'starting' | 'closed' | 'unknown';

/**
 * `pipeline start` claims the directory before it starts the workflow: for this long after a claim, a
 * workflow the server does not know yet is one being started (held), not one that has ended.
 */
export const CLAIM_START_GRACE_MS = 60_000;

/**
 * Whether the claim's workflow runs, asked of `client` (unknown: another server or namespace; starting:
 * not on the server yet, claimed less than CLAIM_START_GRACE_MS ago).
 */
async function claimState(client: Client, settings: TemporalSettings, claim: Claim): Promise<ClaimState> {
  if (claim.namespace !== settings.namespace) return 'unknown';
  // Loaded here: `ckpt train` loads the Temporal client only when a claim is there to ask about.
  const { WorkflowNotFoundError } = require('@temporalio/client') as typeof import('@temporalio/client');
  try {
    const description = await client.workflow.getHandle(claim.workflow_id).describe();
    return description.status.name === 'RUNNING' ? 'running' : 'closed';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      const age = Date.now() - Date.parse(claim.claimed_at);
      return age < CLAIM_START_GRACE_MS ? 'starting' : 'closed';
    }
    throw err;
  }
}

function held(dir: Location, claim: Claim, state: ClaimState): string {
  return state === 'running' || state === 'starting'
    ? `${dir} is held by pipeline ${claim.workflow_id}, which is ${state} (claimed ${claim.claimed_at} by ${claim.by}); ` +
        `stop it first: ckpt pipeline stop ${claim.workflow_id}`
    : state === 'closed'
      ? `${dir} has a stale claim by pipeline ${claim.workflow_id}, which has ended without releasing it ` +
        `(terminated?); pass --take-over to take the directory`
      : `${dir} is claimed by pipeline ${claim.workflow_id} in namespace ${claim.namespace} at ${claim.address}, ` +
        `which cannot be asked from here; pass --take-over if it has ended`;
}

/**
 * Claim `dir` for pipeline `id` before starting it. Refused (WriterConflictError, exit 2) when another
 * pipeline holds it, or a stale claim remains without `takeOver`, or a `ckpt train` is writing it.
 */
export async function claimForPipeline(
  client: Client,
  settings: TemporalSettings,
  dir: Location,
  id: string,
  takeOver: boolean,
): Promise<void> {
  const writer = await currentWriter(openStoreOf(dir));
  if (writer && mayStillWrite(writer) && writer.claim !== id && !takeOver) {
    throw new WriterConflictError(
      `${dir} is being written by ${writer.holder} (writer epoch ${writer.epoch}); stop that run first, or ` +
        'pass --take-over if it is gone',
      { field: 'dir' },
    );
  }
  const mine = newClaim(id, settings.namespace, addressOf(settings));
  for (let tries = 0; tries < 3; tries++) {
    if (await createClaim(dir, mine)) return;
    const claim = await readClaim(dir).catch(() => null);
    if (!claim) {
      if (!takeOver) continue;
      await replaceUnreadable(dir, mine);
      return;
    }
    if (claim.workflow_id === id) {
      // The same id: either it runs (the server refuses the start) or a stale claim of an earlier run of
      // that id, which this start renews.
      if ((await claimState(client, settings, claim)) === 'running') return;
      await replaceClaim(dir, claim, mine);
      return;
    }
    const state = await claimState(client, settings, claim);
    if (state === 'running' || state === 'starting' || !takeOver)
      throw new WriterConflictError(held(dir, claim, state), { field: 'dir' });
    warn0(`taking ${dir} over from pipeline ${claim.workflow_id} (--take-over; its claim was ${state})`);
    await replaceClaim(dir, claim, mine);
    return;
  }
  throw new WriterConflictError(`${dir}: could not claim it (its claim keeps changing)`, { field: 'dir' });
}

/** Undo a claim made for a start that then failed. */
export async function unclaim(dir: Location, id: string): Promise<void> {
  await releaseClaim(dir, id).catch(() => undefined);
}

/**
 * `ckpt train` on `dir`: refused while a pipeline holds it. A pipeline's own training child (`claim` =
 * the pipeline's workflow id) passes; `--take-over` passes any claim; a claim of another pipeline whose
 * state cannot be asked counts as held.
 */
export async function refuseIfClaimed(
  dir: Location,
  options: { claim: string | null; takeOver: boolean; settings: TemporalSettings },
): Promise<void> {
  if (options.takeOver) return;
  const claim = await readClaim(dir);
  if (!claim || claim.workflow_id === options.claim) return;
  // A pipeline's child never asks the server: another pipeline's claim on its directory is a conflict.
  let state: ClaimState = 'unknown';
  if (options.claim === null) {
    try {
      const { connectClient } = require('./temporal-client') as typeof import('./temporal-client');
      state = await claimState(await connectClient(options.settings), options.settings, claim);
    } catch {
      state = 'unknown';
    }
  }
  if (state === 'closed') {
    warn0(`${dir}: the claim of pipeline ${claim.workflow_id} is stale (it has ended); training anyway`);
    return;
  }
  throw new WriterConflictError(held(dir, claim, state), { field: 'dir' });
}

function addressOf(settings: TemporalSettings): string {
  return String((settings.connect.connectionOptions as { address?: string }).address ?? 'localhost:7233');
}

async function replaceUnreadable(dir: Location, mine: Claim): Promise<void> {
  const store = openStoreOf(dir);
  warn0(`${dir}: replacing an unreadable claim (--take-over)`);
  await store.delete(CLAIM_FILE);
  if (!(await createClaim(dir, mine)))
    throw new WriterConflictError(`${dir} was claimed by another pipeline meanwhile`, { field: 'dir' });
}

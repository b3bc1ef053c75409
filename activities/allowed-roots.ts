/**
 * Anyone who can start a workflow on the namespace chooses the locations a worker's activities act on
 * (a pipeline's `dir`, a prune's target, a copy's source and destination) and may name a program by path.
 * The worker's operator bounds both: an activity whose location is outside the worker's allowed roots
 * fails for good, naming the location and the roots, before it touches any file; a program path outside
 * the allowed program roots is refused the same way. Checked here, around every activity of the package,
 * so that no activity can forget it.
 */
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import { checkWithinRoots } from '../checkpoint/allowed-roots';
import { loadAllowedRoots, type AllowedRoots } from '../temporal.config';
import { activityFailure } from './failure';

let configured: AllowedRoots | undefined;

/**
 * Set this process's roots (the plugin's `allowedRoots` option); unset parts, and everything when this is
 * never called, come from the environment (CKPT_ALLOWED_ROOTS, CKPT_ALLOWED_PROGRAM_ROOTS).
 */
export function configureAllowedRoots(roots: Partial<AllowedRoots> | undefined): void {
  const fromEnv = loadAllowedRoots();
  configured = roots ? { ...fromEnv, ...roots } : undefined;
}

export function allowedRoots(): AllowedRoots {
  return configured ?? loadAllowedRoots();
}

/** The fields of an activity's input that name a checkpoint location. */
const LOCATION_FIELDS = ['dir', 'checkpointsDir', 'src', 'dst'] as const;

/**
 * The identity of the worker running the current activity, as the server records it (`temporal workflow
 * describe`, the Web UI): `<role>-<pid>@<host>` for `ckpt worker`, whatever a user's own Worker set. Outside
 * an activity (a unit test), the SDK's default form.
 */
export function activityWorkerIdentity(): string {
  try {
    return Context.current().client.options.identity;
  } catch {
    return `${process.pid}@${hostname()}`;
  }
}

const worker = activityWorkerIdentity;

/** Refuses an input naming a location outside the roots: an OutsideAllowedRootsError, non-retryable. */
export function checkActivityInput(input: unknown): void {
  if (typeof input !== 'object' || input === null) return;
  const roots = allowedRoots().checkpoints;
  for (const field of LOCATION_FIELDS) {
    const location = (input as Record<string, unknown>)[field];
    if (typeof location !== 'string') continue;
    checkWithinRoots(location, roots, {
      field,
      hint: ` of worker ${worker()}; allow it with CKPT_ALLOWED_ROOTS on the workers`,
    });
  }
}

/** `activities`, each checking its input's locations before it runs. */
export function withAllowedRoots<T extends Record<string, (input: never) => Promise<unknown>>>(
  activities: T,
): T {
  const guarded: Record<string, (input: never) => Promise<unknown>> = {};
  for (const [name, activity] of Object.entries(activities)) {
    // A named function per activity: the SDK registers activities under their object keys, and stack
    // traces keep the activity's name.
    guarded[name] = {
      [name]: async (input: never) => {
        try {
          checkActivityInput(input);
        } catch (err) {
          throw activityFailure(err);
        }
        return activity(input);
      },
    }[name]!;
  }
  return guarded as T;
}

/** Refuses a program module path outside the allowed program roots (registered names are not paths). */
export function checkProgramPath(path: string): void {
  try {
    checkWithinRoots(path, allowedRoots().programs, {
      field: 'program',
      hint:
        ` of worker ${worker()}; register it by name on the workers (ckpt worker --program NAME=PATH)` +
        ' or allow its folder with CKPT_ALLOWED_PROGRAM_ROOTS',
    });
  } catch (err) {
    throw activityFailure(err);
  }
}

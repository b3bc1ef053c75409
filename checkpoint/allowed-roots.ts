/**
 * Whether a checkpoint location lies under one of a set of allowed roots (local folders, or URLs such as
 * s3://bucket/prefix). A worker acts on locations that anyone who can start a workflow chooses; the roots
 * are what its operator allows. Local paths are compared after `..` is resolved and symlinks are followed
 * (of the longest part that exists: a checkpoint folder is often created by the save), so neither a
 * `../..` nor a link inside a root that points elsewhere gets out.
 */
import { realpathSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { CheckpointError } from './errors';
import { checkLocation } from './location';

/** A location outside the roots a worker allows. Exit 2 and not retryable: every worker refuses it again. */
export class OutsideAllowedRootsError extends CheckpointError {}

const URL_RE = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i;

/** A location as comparable segments: ['local', ...path parts] or [scheme, bucket, ...key parts]. */
function segments(location: string, field: string): string[] {
  checkLocation(location, field);
  const url = URL_RE.exec(location);
  if (url && url[1]!.toLowerCase() !== 'file') {
    const parts = url[2]!.replace(/\/+$/, '').split('/');
    // S3 keys are plain strings, but clients and proxies may normalise "a/../b" in a request path: a
    // location spelled with such segments is refused rather than guessed at.
    if (parts.some((p) => p === '' || p === '.' || p === '..')) {
      throw new OutsideAllowedRootsError(`${field} "${location}" has an empty, "." or ".." segment`, {
        field,
      });
    }
    return [url[1]!.toLowerCase(), ...parts];
  }
  const path = url ? url[2]! : location;
  return ['local', ...realLocalPath(path).split(sep).filter(Boolean)];
}

/** The absolute path with symlinks resolved in its longest existing part; the rest appended as given. */
function realLocalPath(path: string): string {
  let existing = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(existing), ...rest);
    } catch {
      const parent = dirname(existing);
      if (parent === existing) return resolve(path);
      rest.unshift(basename(existing));
      existing = parent;
    }
  }
}

function within(location: string[], root: string[]): boolean {
  return root.length <= location.length && root.every((part, i) => location[i] === part);
}

/**
 * `location` when it is under one of `roots`; an OutsideAllowedRootsError naming the location and the
 * roots otherwise (also when there are no roots), followed by `hint`. Reads no file: only the folders'
 * names and links.
 */
export function checkWithinRoots(
  location: string,
  roots: readonly string[],
  { field = 'dir', hint = '' }: { field?: string; hint?: string } = {},
): string {
  const target = segments(location, field);
  if (roots.some((root) => within(target, segments(root, 'allowed root')))) return location;
  throw new OutsideAllowedRootsError(
    `${field} ${location} is outside the allowed roots (${roots.length ? roots.join(', ') : 'none'})${hint}`,
    { field, file: location },
  );
}

/**
 * Turns a checkpoint location (a directory path, or a URL such as s3://bucket/prefix once a store for
 * that scheme is registered) into a Store. Everything that accepts a directory accepts a Store as well.
 */
import { join, resolve } from 'node:path';
import { InvalidArgumentError } from './errors';
import { LocalStore } from './local-store';
import type { Store } from './store';

export type Location = string | Store;

type StoreFactory = (url: string) => Store;
const schemes = new Map<string, StoreFactory>();

const URL_RE = /^([a-z][a-z0-9+.-]*):\/\//i;
/** Schemes whose malformed URLs are refused even before a store registers (s3-store.ts loads lazily). */
const KNOWN_SCHEMES = ['s3', 'file'];

/** Register a store for a URL scheme (e.g. 's3'). */
export function registerStoreScheme(scheme: string, factory: StoreFactory): void {
  schemes.set(scheme.toLowerCase(), factory);
}

function isUrl(location: string): boolean {
  return URL_RE.test(location);
}

/**
 * `location` when it is a directory path or a well-formed URL; an InvalidArgumentError naming `field`
 * otherwise. A location that starts like a URL of a known scheme but is not one ("s3:/bucket/x",
 * "s3:bucket", "s3://") is refused rather than taken as a local folder named "s3:": a checkpoint meant
 * for a bucket must never land quietly on the local disk.
 */
export function checkLocation(location: string, field = 'dir'): string {
  if (location.length === 0)
    throw new InvalidArgumentError(`checkpoint location (${field}) must not be empty`, { field });
  const url = URL_RE.exec(location);
  if (url) {
    const scheme = url[1]!.toLowerCase();
    const rest = location.slice(url[0].length);
    if (scheme !== 'file' && !/^[^/]/.test(rest)) {
      throw new InvalidArgumentError(
        `${field} "${location}" names no ${scheme === 's3' ? 'bucket' : 'host'}: write ${scheme}://${scheme === 's3' ? 'bucket/prefix' : 'host/path'}`,
        { field },
      );
    }
    return location;
  }
  const prefix = /^([a-z][a-z0-9+.-]+):/i.exec(location)?.[1]?.toLowerCase();
  if (prefix !== undefined && (KNOWN_SCHEMES.includes(prefix) || schemes.has(prefix))) {
    throw new InvalidArgumentError(
      `${field} "${location}" is not a valid ${prefix} location: write ${prefix}://${prefix === 's3' ? 'bucket/prefix' : '...'}` +
        ` (for a local folder whose name starts with "${prefix}:", write ./${location})`,
      { field },
    );
  }
  return location;
}

/** A checked location with local paths made absolute: workers may run elsewhere, in another directory. */
export function absoluteLocation(location: string, field = 'dir'): string {
  checkLocation(location, field);
  return isUrl(location) ? location : resolve(location);
}

export function openStore(location: Location): Store {
  if (typeof location !== 'string') return location;
  checkLocation(location);
  const m = URL_RE.exec(location);
  if (!m) return new LocalStore(location);
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'file') return new LocalStore(location.slice('file://'.length));
  const factory = schemes.get(scheme);
  if (!factory) {
    throw new InvalidArgumentError(`no store is registered for ${scheme}:// locations (${location})`, {
      field: 'dir',
    });
  }
  return factory(location);
}

/** Append validated path segments to a location: a directory path or a URL-style root. */
export function joinLocation(root: string, ...parts: string[]): string {
  checkLocation(root, 'root');
  if (isUrl(root)) return [root.replace(/\/+$/, ''), ...parts].join('/');
  return join(root, ...parts);
}

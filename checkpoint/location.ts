/**
 * Turns a checkpoint location (a directory path, or a URL such as s3://bucket/prefix once a store for
 * that scheme is registered) into a Store. Everything that accepts a directory accepts a Store as well.
 */
import { InvalidArgumentError } from './errors';
import { LocalStore } from './local-store';
import type { Store } from './store';

export type Location = string | Store;

type StoreFactory = (url: string) => Store;
const schemes = new Map<string, StoreFactory>();

/** Register a store for a URL scheme (e.g. 's3'). */
export function registerStoreScheme(scheme: string, factory: StoreFactory): void {
  schemes.set(scheme.toLowerCase(), factory);
}

export function openStore(location: Location): Store {
  if (typeof location !== 'string') return location;
  if (location.length === 0)
    throw new InvalidArgumentError('checkpoint location must not be empty', { field: 'dir' });
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(location);
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
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(root)) return [root.replace(/\/+$/, ''), ...parts].join('/');
  return require('node:path').join(root, ...parts);
}

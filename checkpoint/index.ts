/** The checkpoint layer's public API: files, stores, commit protocol, discovery, retention, migrations. */
export * from './errors';
export * from './tensors';
export * from './names';
export * from './store';
export { LocalStore } from './local-store';
export {
  absoluteLocation,
  checkLocation,
  openStore,
  registerStoreScheme,
  joinLocation,
  type Location,
} from './location';
export { checkWithinRoots, OutsideAllowedRootsError } from './allowed-roots';
export * from './manifest';
export * from './checkpoint';
export * from './commit-files';
export * from './coordinator';
export * from './verify';
export * from './discovery';
export * from './maintenance';
export * from './retention';
export * from './lease';
export * from './writer';
export * from './claim';
export * from './prune';
export * from './migrations';
export * from './log';
export { toFloat32, fromFloat32 } from './dtype';
export * from './safetensors';
export * from './copy';
export * from './s3-store';
export * from './async-save';
export * from './import';

/** Whether an optional package (e.g. a native tfjs backend) can be required here. */
export function installed(pkg: string): boolean {
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

/**
 * Tests that need a Debian package (python3-torch, libvulkan1): where it is missing they print one
 * `SKIPPED <test>: needs <package> (apt-get install <package>)` line and skip, so that `npm test` passes on a
 * fresh machine; where the environment variable `require` is 1 (.ci/run sets it after installing the package)
 * a missing package fails the file instead. Not part of the package's API.
 */
export interface SystemPrerequisite {
  /** The test or suite, as the SKIPPED line names it. */
  test: string;
  /** The Debian package that provides it. */
  pkg: string;
  /** Environment variable that turns the skip into a failure, e.g. GOOGLENET_REQUIRE_TORCH. */
  require: string;
  /** Why it is missing (what the probe saw), or undefined when it is there. */
  missing: string | undefined;
}

/** True when the prerequisite is there; otherwise says so and returns false, or throws where it is required. */
export function hasSystemPrerequisite(p: SystemPrerequisite): boolean {
  if (p.missing === undefined) return true;
  const line = `${p.test}: needs ${p.pkg} (apt-get install ${p.pkg}); ${p.missing}`;
  if (process.env[p.require] === '1') throw new Error(`${p.require}=1 but ${line}`);
  console.warn(`SKIPPED ${line}`);
  return false;
}

import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/** Overrides the host id (tests simulate several machines on one; a launcher may know better). */
export const HOST_ID_ENV = 'GOOGLENET_HOST_ID';

/**
 * Which ranks can share memory: equal ids mean the same kernel boot, the same mount namespace (the same /dev/shm)
 * and the same pid namespace (the shm plane checks that peers' pids still exist). Containers on one machine
 * therefore get different ids unless they share those namespaces. Hashed: hello carries no host details.
 */
export function hostId(env: NodeJS.ProcessEnv = process.env): string {
  const forced = env[HOST_ID_ENV];
  if (forced) return forced.slice(0, 128);
  const read = (f: () => string): string => { try { return f(); } catch { return '?'; } };
  const parts = [
    hostname(),
    read(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()),
    read(() => readlinkSync('/proc/self/ns/mnt')),
    read(() => readlinkSync('/proc/self/ns/pid')),
  ];
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32);
}

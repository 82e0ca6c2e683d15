/**
 * Which data plane a generation uses, from what every worker offered in hello. Requested (the coordinator's
 * `dataPlane` option):
 *   'auto' (and 'shm'): shared memory when every worker offered the same host id (one machine, same /dev/shm and
 *                       pid namespace, addon loaded), else as 'peer'
 *   'peer':             worker-to-worker TCP when every worker offered a data port, else the coordinator
 *   'coordinator':      every byte through the coordinator's WebSocket (the original design)
 * A plane nobody can use falls back to the next one, and `why` says so for the coordinator's log.
 */
export type DataPlaneChoice = 'auto' | 'shm' | 'peer' | 'coordinator';
export type DataPlane = 'shm' | 'peer' | 'coordinator';
export const DATA_PLANES: readonly DataPlaneChoice[] = ['auto', 'shm', 'peer', 'coordinator'];

/** What one worker offered in hello. */
export interface Offer { dataPort?: number; hostId?: string }

export function choosePlane(requested: DataPlaneChoice, offers: readonly Offer[]): { plane: DataPlane; why: string } {
  if (requested === 'coordinator') return { plane: 'coordinator', why: 'requested' };
  let why = '';
  if (requested === 'auto' || requested === 'shm') {
    const hosts = new Set(offers.map((o) => o.hostId));
    const without = offers.flatMap((o, r) => (o.hostId === undefined ? [r] : []));
    if (without.length === 0 && hosts.size === 1) return { plane: 'shm', why: `all ${offers.length} ranks on one host` };
    why = without.length > 0
      ? `shm: rank(s) ${without.join(',')} offered no host id (no shm addon, or their dataPlane excludes it)`
      : `shm: ranks are on ${hosts.size} hosts`;
  }
  const noPort = offers.flatMap((o, r) => (o.dataPort === undefined ? [r] : []));
  if (noPort.length === 0) return { plane: 'peer', why: why || 'requested' };
  return { plane: 'coordinator', why: `${why ? `${why}; ` : ''}peer: rank(s) ${noPort.join(',')} offered no data port (wss://, or their dataPlane is 'coordinator')` };
}

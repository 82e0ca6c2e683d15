/**
 * Which data plane a generation uses, from what every worker offered in hello. Requested (the coordinator's
 * `dataPlane` option):
 *   'auto' (and 'shm'): shared memory when every worker offered the same host id (one machine, same /dev/shm and
 *                       pid namespace, addon loaded); across machines the hierarchical plane ('hier': shared memory
 *                       within each machine, TCP between machines) when every rank offered a host id and a data
 *                       port, every host has more than one rank and each host's ranks are contiguous; else as 'peer'
 *   'peer':             worker-to-worker TCP when every worker offered a data port, else the coordinator
 *   'coordinator':      every byte through the coordinator's WebSocket (the original design)
 * A plane nobody can use falls back to the next one, and `why` says so for the coordinator's log.
 */
export type DataPlaneChoice = 'auto' | 'shm' | 'peer' | 'coordinator';
export type DataPlane = 'shm' | 'hier' | 'peer' | 'coordinator';
export const DATA_PLANES: readonly DataPlaneChoice[] = ['auto', 'shm', 'peer', 'coordinator'];

/** What one worker offered in hello. */
export interface Offer { dataPort?: number; hostId?: string }

/** `machines` (hier only): the first rank of each machine, then the world size (ranks machines[m]..machines[m+1]-1). */
export interface PlaneChoice { plane: DataPlane; why: string; machines?: number[] }

export function choosePlane(requested: DataPlaneChoice, offers: readonly Offer[]): PlaneChoice {
  if (requested === 'coordinator') return { plane: 'coordinator', why: 'requested' };
  let why = '';
  const noPort = offers.flatMap((o, r) => (o.dataPort === undefined ? [r] : []));
  if (requested === 'auto' || requested === 'shm') {
    const hosts = new Set(offers.map((o) => o.hostId));
    const without = offers.flatMap((o, r) => (o.hostId === undefined ? [r] : []));
    if (without.length === 0 && hosts.size === 1) return { plane: 'shm', why: `all ${offers.length} ranks on one host` };
    if (without.length > 0) why = `shm: rank(s) ${without.join(',')} offered no host id (no shm addon, or their dataPlane excludes it)`;
    else {
      const h = hierarchy(offers.map((o) => o.hostId!));
      if (typeof h !== 'string' && noPort.length === 0) {
        const sizes = h.slice(1).map((b, m) => b - h[m]!);
        return { plane: 'hier', why: `${sizes.length} hosts of ${sizes.join('+')} ranks`, machines: h };
      }
      why = `shm: ranks are on ${hosts.size} hosts; hier: ${typeof h === 'string' ? h : `rank(s) ${noPort.join(',')} offered no data port`}`;
    }
  }
  if (noPort.length === 0) return { plane: 'peer', why: why || 'requested' };
  return { plane: 'coordinator', why: `${why ? `${why}; ` : ''}peer: rank(s) ${noPort.join(',')} offered no data port (wss://, or their dataPlane is 'coordinator')` };
}

/**
 * The machine boundaries when every host's ranks are contiguous and every host has at least two (with one rank a
 * machine has nothing to reduce locally, and the flat plane sends no more), else why not.
 */
export function hierarchy(hostIds: readonly string[]): number[] | string {
  const bounds = [0];
  const seen = new Set<string>();
  for (let r = 1; r <= hostIds.length; r++) {
    if (r < hostIds.length && hostIds[r] === hostIds[r - 1]) continue;
    if (seen.has(hostIds[r - 1]!)) return `the ranks of host ${hostIds[r - 1]!.slice(0, 12)} are not contiguous (rank ${bounds.at(-1)} follows another host's)`;
    seen.add(hostIds[r - 1]!);
    bounds.push(r);
  }
  const single = bounds.slice(1).flatMap((b, m) => (b - bounds[m]! < 2 ? [bounds[m]!] : []));
  if (single.length > 0) return `rank(s) ${single.join(',')} alone on their host`;
  return bounds;
}

import { describe, expect, it } from 'vitest';
import { hostId } from './host-id.js';
import { choosePlane, hierarchy } from './plane-select.js';

describe('data plane selection', () => {
  const same = [{ dataPort: 1, hostId: 'a' }, { dataPort: 2, hostId: 'a' }, { dataPort: 3, hostId: 'a' }];

  it('picks shared memory when every rank offered the same host id, for auto and shm', () => {
    expect(choosePlane('auto', same).plane).toBe('shm');
    expect(choosePlane('shm', same).plane).toBe('shm');
  });

  it('picks the hierarchical plane for contiguous ranks on several hosts with at least two each, for auto and shm', () => {
    const offers = ['a', 'a', 'b', 'b', 'b', 'c', 'c'].map((hostId, r) => ({ dataPort: r + 1, hostId }));
    expect(choosePlane('auto', offers)).toEqual({ plane: 'hier', why: '3 hosts of 2+3+2 ranks', machines: [0, 2, 5, 7] });
    expect(choosePlane('shm', offers.slice(0, 4)).machines).toEqual([0, 2, 4]);
    expect(choosePlane('peer', offers).plane).toBe('peer');
    expect(hierarchy(['x', 'x', 'y', 'y'])).toEqual([0, 2, 4]);
  });

  it('falls back to the peer plane when hosts interleave, a host has one rank, or a rank offered no port or host id, and says why', () => {
    const at = (ids: string[]) => ids.map((hostId, r) => ({ dataPort: r + 1, hostId }));
    expect(choosePlane('auto', at(['a', 'b', 'a', 'b']))).toEqual({ plane: 'peer', why: 'shm: ranks are on 2 hosts; hier: the ranks of host a are not contiguous (rank 2 follows another host\'s)' });
    expect(choosePlane('auto', at(['a', 'a', 'b']))).toEqual({ plane: 'peer', why: 'shm: ranks are on 2 hosts; hier: rank(s) 2 alone on their host' });
    const noPort = choosePlane('auto', [...at(['a', 'a', 'b']), { hostId: 'b' }]);
    expect(noPort).toEqual({ plane: 'coordinator', why: 'shm: ranks are on 2 hosts; hier: rank(s) 3 offered no data port; peer: rank(s) 3 offered no data port (wss://, or their dataPlane is \'coordinator\')' });
    const twoHosts = choosePlane('auto', [...same.slice(0, 2), { dataPort: 3, hostId: 'b' }]);
    expect(twoHosts.plane).toBe('peer');
    const noAddon = choosePlane('shm', [same[0]!, { dataPort: 2 }]);
    expect(noAddon.plane).toBe('peer');
    expect(noAddon.why).toMatch(/rank\(s\) 1 offered no host id/);
  });

  it('uses the coordinator when asked, or when a rank offered no data port either', () => {
    expect(choosePlane('coordinator', same).plane).toBe('coordinator');
    expect(choosePlane('peer', same).plane).toBe('peer');
    const r = choosePlane('auto', [{ hostId: 'a' }, { hostId: 'b' }]);
    expect(r.plane).toBe('coordinator');
    expect(r.why).toMatch(/ranks are on 2 hosts; hier: rank\(s\) 0,1 alone on their host; peer: rank\(s\) 0,1 offered no data port/);
  });

  it('derives one host id per machine and namespace, overridable by GOOGLENET_HOST_ID', () => {
    expect(hostId({})).toBe(hostId({}));
    expect(hostId({})).toMatch(/^[0-9a-f]{32}$/);
    expect(hostId({ GOOGLENET_HOST_ID: 'machine-2' })).toBe('machine-2');
  });
});

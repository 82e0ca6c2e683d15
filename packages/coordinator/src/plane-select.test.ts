import { describe, expect, it } from 'vitest';
import { hostId } from './host-id.js';
import { choosePlane } from './plane-select.js';

describe('data plane selection', () => {
  const same = [{ dataPort: 1, hostId: 'a' }, { dataPort: 2, hostId: 'a' }, { dataPort: 3, hostId: 'a' }];

  it('picks shared memory when every rank offered the same host id, for auto and shm', () => {
    expect(choosePlane('auto', same).plane).toBe('shm');
    expect(choosePlane('shm', same).plane).toBe('shm');
  });

  it('falls back to the peer plane when ranks are on two hosts or one lacks the addon, and says why', () => {
    const twoHosts = choosePlane('auto', [...same.slice(0, 2), { dataPort: 3, hostId: 'b' }]);
    expect(twoHosts).toEqual({ plane: 'peer', why: 'shm: ranks are on 2 hosts' });
    const noAddon = choosePlane('shm', [same[0]!, { dataPort: 2 }]);
    expect(noAddon.plane).toBe('peer');
    expect(noAddon.why).toMatch(/rank\(s\) 1 offered no host id/);
  });

  it('uses the coordinator when asked, or when a rank offered no data port either', () => {
    expect(choosePlane('coordinator', same).plane).toBe('coordinator');
    expect(choosePlane('peer', same).plane).toBe('peer');
    const r = choosePlane('auto', [{ hostId: 'a' }, { hostId: 'b' }]);
    expect(r.plane).toBe('coordinator');
    expect(r.why).toMatch(/ranks are on 2 hosts; peer: rank\(s\) 0,1 offered no data port/);
  });

  it('derives one host id per machine and namespace, overridable by GOOGLENET_HOST_ID', () => {
    expect(hostId({})).toBe(hostId({}));
    expect(hostId({})).toMatch(/^[0-9a-f]{32}$/);
    expect(hostId({ GOOGLENET_HOST_ID: 'machine-2' })).toBe('machine-2');
  });
});

import { describe, expect, it } from 'vitest';
import { identityFromEnv } from './identity';

describe('worker identity from the environment', () => {
  it('is undefined for a plain run', () => expect(identityFromEnv({})).toBeUndefined());
  it("reads torchrun's variables and builds the coordinator address from MASTER_ADDR/PORT", () => {
    expect(identityFromEnv({ RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '29500' })).toEqual({
      rank: 3, worldSize: 4, localRank: 1, coordinatorUrl: 'ws://10.0.0.5:29500', device: undefined, attempt: 0,
    });
  });
  it("reads Slurm's variables", () => {
    const id = identityFromEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '8', SLURM_LOCALID: '1', GOOGLENET_COORDINATOR_URL: 'wss://head:7000', CUDA_VISIBLE_DEVICES: '1' });
    expect(id).toMatchObject({ rank: 5, worldSize: 8, localRank: 1, coordinatorUrl: 'wss://head:7000', device: '1' });
  });
  it('rejects inconsistent variables with a BAD_ENV error', () => {
    expect(() => identityFromEnv({ RANK: '4', WORLD_SIZE: '4' })).toThrow(/must be below WORLD_SIZE/);
    expect(() => identityFromEnv({ RANK: '0' })).toThrow(/WORLD_SIZE is not set/);
    expect(() => identityFromEnv({ RANK: '0', WORLD_SIZE: '2' })).toThrow(/no coordinator address/);
    expect(() => identityFromEnv({ RANK: 'x', WORLD_SIZE: '2' })).toThrow(/not a non-negative integer/);
  });
});

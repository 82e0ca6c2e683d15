import { HEADER_ROOM, bytesPer, type DType } from './protocol.js';
import { align16 } from './reduce.js';

/**
 * Where one collective lives in the coordinator's arena (byte offsets, 16-aligned):
 *
 *   [rank 0 input | rank 1 input | ...][result slot per bucket: header room + payload][f32 scratch]
 *
 * Each rank's buckets are copied to their final place in its input region as they arrive; a bucket's result
 * slot keeps HEADER_ROOM bytes in front of the payload so that the result message is sent without a copy.
 */
export interface RoundLayout {
  /** buckets (1 for a peer-plane round, which carries no data here) */
  nb: number;
  esize: number;
  inBase: number;
  /** bytes between two ranks' inputs */
  stride: number;
  outBase: number;
  /** bytes per result slot */
  slotBytes: number;
  /** f32 scratch for the fp16 mean, before it is rounded into the slot */
  scratch: number;
  /** arena bytes the round needs (0 for a peer-plane round) */
  bytes: number;
}

export function roundLayout(worldSize: number, m: { dtype: DType; numel: number; bucketElems: number }, peer: boolean): RoundLayout {
  const nb = peer ? 1 : Math.max(1, Math.ceil(m.numel / m.bucketElems));
  const esize = bytesPer(m.dtype);
  const per = Math.min(m.bucketElems, m.numel);
  const stride = align16(m.numel * esize);
  const slotBytes = HEADER_ROOM + align16(per * esize);
  const inBase = 0, outBase = worldSize * stride, scratch = outBase + nb * slotBytes;
  return { nb, esize, inBase, stride, outBase, slotBytes, scratch, bytes: peer ? 0 : scratch + align16(per * 4) + 16 };
}

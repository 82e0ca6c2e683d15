import { Packr } from 'msgpackr';
import { strictUnpack } from './msgpack.js';

/**
 * Wire format (every WebSocket message is binary):
 *
 *   0..3   u32 LE  H = msgpack header length
 *   4..7   u32 LE  P = payload offset (multiple of 8, >= 8 + H)
 *   8..8+H         msgpack map { v: 1, type, ... }
 *   ..P            zero padding
 *   P..end         raw little-endian payload (f32 / f16), possibly empty
 *
 * The payload starts at an 8-aligned offset of the message, so a sender can keep a fixed header room in
 * front of a preallocated payload and a receiver knows exactly where the raw bytes start without parsing them.
 */
export const PROTOCOL_VERSION = 1;
export const PREFIX_BYTES = 8;
/** Header room reserved in front of every preallocated payload; headers never grow past it. */
export const HEADER_ROOM = 1024;
/** Bounds a control message's msgpack header, so a hostile peer cannot make us decode megabytes of maps. */
export const MAX_HEADER_BYTES = 256 * 1024;
export const MAX_METRICS = 64;

/** 4xxx close codes (1009 "message too big" comes from ws itself when a frame exceeds maxMessageBytes). */
export const CloseCode = {
  MALFORMED: 4000,
  BAD_VERSION: 4001,
  UNKNOWN_TYPE: 4002,
  WRONG_SIZE: 4003,
  UNEXPECTED: 4004,
  REJECTED: 4005,
  RENDEZVOUS_TIMEOUT: 4006,
  ABORTED: 4007,
  /** reserved: no longer sent (missed pongs are not a failure: a computing worker cannot answer) */
  HEARTBEAT: 4008,
  SHUTDOWN: 4009,
  HELLO_TIMEOUT: 4010,
} as const;

export type DType = 'f32' | 'f16';
export type Op = 'mean' | 'bcast';
export interface SignatureEntry { name: string; shape: number[] }

/**
 * `dataPort`: the worker's peer data listener (absent: the worker only speaks the coordinator data plane).
 * `hostId`: offered when the worker can use the shared-memory plane (host-id.ts); equal ids share /dev/shm.
 */
export interface HelloMsg { v: 1; type: 'hello'; rank: number; worldSize: number; runId?: string; signature: SignatureEntry[]; dataPort?: number; hostId?: string }
/**
 * `peers` + `dataKey` (64 hex chars, per generation) select the peer data plane; `shm` (the segment's path, per
 * generation) the shared-memory plane; all three plus `machines` (the first rank of each machine, then worldSize)
 * the hierarchical plane, `shm` then being this worker's machine's segment; none: data goes through the coordinator.
 */
export interface WelcomeMsg {
  v: 1; type: 'welcome'; generation: number; worldSize: number; runId: string; maxMessageBytes: number;
  peers?: PeerAddress[]; dataKey?: string; shm?: string; machines?: number[];
}
/** The only segment paths a worker maps (a coordinator cannot make it create or open any other file). */
export const SHM_PATH = /^\/dev\/shm\/googlenet-[0-9a-f]{24}$/;
export interface PeerAddress { host: string; port: number }
export interface ErrorMsg { v: 1; type: 'error'; code: string; message: string }
/**
 * One bucket of one collective. `seq` counts collectives from 1 within a generation. `tail`: this all-reduce is the
 * float32 remainder of the preceding fp16 one (values that must not be rounded); not counted as a training step.
 */
export interface DataMsg {
  v: 1; type: 'data'; seq: number; op: Op; dtype: DType;
  numel: number; bucketElems: number; bucket: number; count: number;
  metrics?: number[]; tail?: boolean;
}
export interface ResultMsg { v: 1; type: 'result'; seq: number; dtype: DType; bucket: number; count: number; metrics?: number[] }
export interface AbortMsg { v: 1; type: 'abort'; generation: number; failedRank: number; code: string; reason: string }
export interface ByeMsg { v: 1; type: 'bye' }
/** Peer data plane, worker -> coord: this rank called collective `seq` (the coordinator checks that all ranks agree). */
export interface CollMsg { v: 1; type: 'coll'; seq: number; op: Op; dtype: DType; numel: number; bucketElems: number; metrics?: number[]; tail?: boolean }
/** Peer data plane, coord -> worker: every rank called `seq` consistently; exchange the data. `metrics`: the sums. */
export interface GoMsg { v: 1; type: 'go'; seq: number; metrics?: number[] }
/** Peer data plane, worker -> coord: the data connection with rank `peer` broke or carried garbage. */
export interface PeerFailureMsg { v: 1; type: 'peerFailure'; seq: number; peer: number; code: string; reason: string }
/**
 * First frame on a peer data connection (connector -> acceptor); its payload is the generation's 32-byte data key,
 * raw, at PEER_FRAME_HEADER, so that the acceptor compares the key before it decodes a byte of msgpack.
 */
export interface PeerHelloMsg { v: 1; type: 'peer'; rank: number }
/** One chunk on a peer data connection: 'in' = a rank's input for the receiver's shard, 'out' = reduced values. */
export interface ChunkMsg { v: 1; type: 'chunk'; seq: number; phase: 'in' | 'out'; offset: number; count: number }
export type Message = HelloMsg | WelcomeMsg | ErrorMsg | DataMsg | ResultMsg | AbortMsg | ByeMsg | CollMsg | GoMsg | PeerFailureMsg | PeerHelloMsg | ChunkMsg;

/** Every frame on a peer data connection has its payload at exactly this offset (prefix + msgpack header + zero pad). */
export const PEER_FRAME_HEADER = 128;
/** Bytes of the data key (the payload of the peer hello). */
export const PEER_KEY_BYTES = 32;

// Plain maps (no msgpackr records) so any msgpack implementation can speak the protocol. Decoding is strict
// (msgpack.ts): the bytes come from unauthenticated sockets.
const packr = new Packr({ useRecords: false, variableMapSize: true });

export class ProtocolViolation extends Error {
  constructor(readonly closeCode: number, message: string) { super(message); }
}

export const align8 = (n: number): number => (n + 7) & ~7;
export const bytesPer = (dtype: DType): number => (dtype === 'f32' ? 4 : 2);

/** Writes prefix + header into target[0..payloadOffset) and returns payloadOffset. */
export function writeHeader(target: Uint8Array, header: Message, payloadOffset: number): void {
  const h = packr.pack(header);
  if (PREFIX_BYTES + h.length > payloadOffset) {
    throw new ProtocolViolation(CloseCode.MALFORMED, `header of ${h.length} bytes does not fit in ${payloadOffset}`);
  }
  const dv = new DataView(target.buffer, target.byteOffset, PREFIX_BYTES);
  dv.setUint32(0, h.length, true);
  dv.setUint32(4, payloadOffset, true);
  target.set(h, PREFIX_BYTES);
  target.fill(0, PREFIX_BYTES + h.length, payloadOffset);
}

/** A control message (no payload, or a small one): allocates, so never used for tensors on the hot path. */
export function encode(header: Message, payload?: Uint8Array): Buffer {
  const h = packr.pack(header);
  const p = align8(PREFIX_BYTES + h.length);
  const out = Buffer.alloc(p + (payload?.byteLength ?? 0));
  out.writeUInt32LE(h.length, 0);
  out.writeUInt32LE(p, 4);
  out.set(h, PREFIX_BYTES);
  if (payload) out.set(payload, p);
  return out;
}

export interface Decoded { msg: Message; payload: Buffer }

/** Parses and validates one message; throws ProtocolViolation (with the close code to use) on anything wrong. */
export function decode(buf: Buffer): Decoded {
  if (buf.length < PREFIX_BYTES) throw new ProtocolViolation(CloseCode.MALFORMED, `message of ${buf.length} bytes is shorter than the 8-byte prefix`);
  const h = buf.readUInt32LE(0);
  const p = buf.readUInt32LE(4);
  if (h === 0 || h > MAX_HEADER_BYTES || PREFIX_BYTES + h > p || p % 8 !== 0 || p > buf.length) {
    throw new ProtocolViolation(CloseCode.MALFORMED, `bad prefix (header ${h} bytes, payload offset ${p}, message ${buf.length} bytes)`);
  }
  let raw: unknown;
  try {
    raw = strictUnpack(buf.subarray(PREFIX_BYTES, PREFIX_BYTES + h));
  } catch (e) {
    throw new ProtocolViolation(CloseCode.MALFORMED, `header is not msgpack: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ProtocolViolation(CloseCode.MALFORMED, 'header is not a map');
  const m = raw as Record<string, unknown>;
  if (m.v !== PROTOCOL_VERSION) throw new ProtocolViolation(CloseCode.BAD_VERSION, `protocol version ${String(m.v)}, this coordinator speaks ${PROTOCOL_VERSION}`);
  const payload = buf.subarray(p);
  validate(m);
  return { msg: m as unknown as Message, payload };
}

const isInt = (x: unknown, min = 0): x is number => Number.isSafeInteger(x) && (x as number) >= min;
const isStr = (x: unknown, max = 1024): x is string => typeof x === 'string' && x.length <= max;

function bad(what: string): never {
  throw new ProtocolViolation(CloseCode.MALFORMED, what);
}

function validate(m: Record<string, unknown>): void {
  switch (m.type) {
    case 'hello':
      if (!isInt(m.rank) || !isInt(m.worldSize, 1)) bad('hello: rank and worldSize must be integers');
      if (m.runId !== undefined && !isStr(m.runId)) bad('hello: runId must be a string');
      if (!Array.isArray(m.signature) || m.signature.length > 100_000) bad('hello: signature must be an array');
      if (m.dataPort !== undefined && !(isInt(m.dataPort, 1) && (m.dataPort as number) < 65536)) bad('hello: dataPort must be a port number');
      if (m.hostId !== undefined && !(isStr(m.hostId, 128) && m.hostId.length > 0)) bad('hello: hostId must be a string of 1..128 characters');
      for (const e of m.signature as unknown[]) {
        const s = e as SignatureEntry;
        if (typeof s !== 'object' || s === null || !isStr(s.name) || !Array.isArray(s.shape) || !s.shape.every((d) => isInt(d))) {
          bad('hello: signature entries must be { name: string, shape: int[] }');
        }
      }
      return;
    case 'data':
      if (!isInt(m.seq, 1) || !isInt(m.numel) || !isInt(m.bucketElems, 1) || !isInt(m.bucket) || !isInt(m.count)) bad('data: seq, numel, bucketElems, bucket, count must be integers');
      if (m.op !== 'mean' && m.op !== 'bcast') bad(`data: unknown op ${String(m.op)}`);
      if (m.dtype !== 'f32' && m.dtype !== 'f16') bad(`data: unknown dtype ${String(m.dtype)}`);
      if (m.metrics !== undefined && !isMetrics(m.metrics)) bad(`data: metrics must be at most ${MAX_METRICS} numbers`);
      if (m.tail !== undefined && m.tail !== true) bad('data: tail must be true or absent');
      return;
    case 'result':
      if (!isInt(m.seq, 1) || !isInt(m.bucket) || !isInt(m.count)) bad('result: seq, bucket, count must be integers');
      if (m.dtype !== 'f32' && m.dtype !== 'f16') bad('result: unknown dtype');
      if (m.metrics !== undefined && !isMetrics(m.metrics)) bad('result: bad metrics');
      return;
    case 'welcome':
      if (!isInt(m.generation) || !isInt(m.worldSize, 1) || !isStr(m.runId) || !isInt(m.maxMessageBytes, 1)) bad('welcome: bad fields');
      if (m.peers !== undefined && (!Array.isArray(m.peers) || m.peers.length !== m.worldSize ||
        !m.peers.every((p: PeerAddress) => typeof p === 'object' && p !== null && isStr(p.host, 256) && isInt(p.port, 1)))) bad('welcome: bad peers');
      if ((m.peers === undefined) !== (m.dataKey === undefined) || (m.dataKey !== undefined && !(isStr(m.dataKey) && /^[0-9a-f]{64}$/.test(m.dataKey)))) bad('welcome: bad dataKey');
      if (m.shm !== undefined && !(isStr(m.shm, 64) && SHM_PATH.test(m.shm) && (m.peers === undefined) === (m.machines === undefined))) bad('welcome: bad shm segment path');
      if (m.machines !== undefined) {
        const b = m.machines as unknown[];
        if (!(m.shm !== undefined && Array.isArray(b) && b.length >= 3 && b.length <= (m.worldSize as number) + 1 && b[0] === 0 &&
          b[b.length - 1] === m.worldSize && b.every((x, i) => isInt(x) && (i === 0 || x > (b[i - 1] as number))))) {
          bad('welcome: bad machines (the first rank of each machine, increasing from 0, then worldSize)');
        }
      }
      return;
    case 'coll':
      if (!isInt(m.seq, 1) || !isInt(m.numel) || !isInt(m.bucketElems, 1)) bad('coll: seq, numel, bucketElems must be integers');
      if (m.op !== 'mean' && m.op !== 'bcast') bad(`coll: unknown op ${String(m.op)}`);
      if (m.dtype !== 'f32' && m.dtype !== 'f16') bad(`coll: unknown dtype ${String(m.dtype)}`);
      if (m.metrics !== undefined && !isMetrics(m.metrics)) bad(`coll: metrics must be at most ${MAX_METRICS} numbers`);
      if (m.tail !== undefined && m.tail !== true) bad('coll: tail must be true or absent');
      return;
    case 'go':
      if (!isInt(m.seq, 1)) bad('go: seq must be an integer');
      if (m.metrics !== undefined && !isMetrics(m.metrics)) bad('go: bad metrics');
      return;
    case 'peerFailure':
      if (!isInt(m.seq) || !isInt(m.peer) || !isStr(m.code, 64) || !isStr(m.reason, 8192)) bad('peerFailure: bad fields');
      return;
    case 'peer':
      if (!isInt(m.rank)) bad('peer: rank required');
      return;
    case 'chunk':
      if (!isInt(m.seq, 1) || !isInt(m.offset) || !isInt(m.count, 1) || (m.phase !== 'in' && m.phase !== 'out')) bad('chunk: bad fields');
      return;
    case 'error':
      if (!isStr(m.code) || !isStr(m.message, 8192)) bad('error: code and message must be strings');
      return;
    case 'abort':
      if (!isInt(m.generation) || !Number.isSafeInteger(m.failedRank) || !isStr(m.code) || !isStr(m.reason, 8192)) bad('abort: bad fields');
      return;
    case 'bye':
      return;
    default:
      throw new ProtocolViolation(CloseCode.UNKNOWN_TYPE, `unknown message type ${JSON.stringify(m.type)?.slice(0, 40)}`);
  }
}

function isMetrics(x: unknown): x is number[] {
  return Array.isArray(x) && x.length <= MAX_METRICS && x.every((v) => typeof v === 'number');
}

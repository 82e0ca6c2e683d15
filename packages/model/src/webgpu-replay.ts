/**
 * Capture and replay of a webgpu step's GPU work (the idea of CUDA graphs and of ONNX Runtime's WebGPU graph
 * capture). A GoogLeNet training step is ~1,100 dispatches, and tfjs spends ~70 us of host time on each (its
 * engine and autodiff tape, a fresh uniform buffer and bind group per dispatch, Dawn's validation of all that).
 * Replaying a recorded step costs 2-3 Dawn calls per dispatch and none of the rest.
 *
 * capture(fn) runs `fn` (a normal step through tfjs) while recording, at the WebGPU API level, what tfjs and
 * our kernels issue: every dispatch (pipeline, bind group, workgroups), every buffer copy, every upload of host
 * data (tensor values) and every uniform write. The memory of the step becomes static: each buffer the recorded
 * commands touch is taken out of tfjs's buffer pool for as long as the graph lives, so no other tensor can get
 * it, and uniform buffers are not recycled within the step, so each dispatch keeps its own uniforms. A replay
 * then writes only what changes from step to step:
 *   - named inputs: uploads whose host array the caller names at capture (images, labels, dropout masks), and
 *     rewrites at replay (same sizes);
 *   - named scalars: uniform fields that a kernel declares per-step (`lr` in sgdStep);
 *   - carried state: a variable that the step re-points to a new buffer (BatchNorm running statistics through
 *     assign) has its newest value copied back into the buffer the recorded step reads it from, first thing.
 * and encodes the recorded list into one command buffer. Every other upload and uniform is a constant of the
 * step; diffRecordings compares two captured steps to prove it (an unexplained difference rejects the graph).
 *
 * Before each replay the graph checks that every tensor it reads from outside (weights, momentum, cached
 * constants) still lives in the buffer recorded; if not (a checkpoint was loaded, a variable reassigned) the
 * replay is refused and the caller runs the normal path. Capture refuses profiling (tf.time's timestamp
 * queries), reads inside the step and render work, with a reason.
 */
import * as tf from '@tensorflow/tfjs';

/** The parts of tfjs-backend-webgpu's backend (backend_webgpu.ts) that capture and replay go through. */
interface Backend {
  device: GPUDevice;
  queue: GPUQueue;
  bufferManager: BufferManager;
  tensorMap: { get(id: unknown): TensorData | undefined };
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  activeTimers: unknown[] | null;
  uploadToGPU(dataId: unknown): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}
interface TensorData { resource?: unknown; values?: ArrayLike<number> | null; dtype: string }
interface BufferManager {
  freeBuffers: Map<string, GPUBuffer[]>;
  usedBuffers: Map<string, GPUBuffer[]>;
  numFreeBuffers: number;
  acquireBuffer(size: number, usage: number, mapped?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

type HostArray = Float32Array | Int32Array;

/** Why a step cannot be captured or replayed; `code` is stable, the message says what differed. */
export class ReplayError extends Error {
  constructor(readonly code: 'REPLAY_UNSUPPORTED' | 'REPLAY_MISMATCH', message: string) {
    super(message);
    this.name = 'ReplayError';
  }
}

type Op =
  | { kind: 'dispatch'; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; groups: [number, number, number] }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; size: number }
  | { kind: 'upload'; dst: GPUBuffer; values: HostArray; input?: string };

/** What one captured step issued, in order, and the uniforms of each dispatch. */
export interface Recording {
  ops: Op[];
  /** Uniform bytes of each bind group that has a uniform buffer (written once, at capture). */
  uniforms: Map<GPUBindGroup, { buffer: GPUBuffer; bytes: Uint8Array }>;
  /** Per-step uniform fields: byte ranges (4 bytes) of uniform buffers, by scalar name. */
  scalars: { name: string; buffer: GPUBuffer; offset: number }[];
  /** The buffers each bind group binds. */
  bindGroupBuffers: Map<GPUBindGroup, GPUBuffer[]>;
  /** Tensors bound by the step whose buffers existed before it (weights, cached constants), by dataId. */
  boundBefore: Map<unknown, GPUBuffer>;
  /** Every registered variable's buffer when the capture began. */
  variables: Map<tf.Variable, GPUBuffer | undefined>;
}

/** Where the capture of the active step is told about a per-step uniform (set by capture, read by our kernels). */
let scalarSink: ((name: string, buffer: GPUBuffer, offset: number) => void) | null = null;
/** Called by directDispatch for each per-step scalar of its uniforms (e.g. sgdStep's learning rate). */
export function noteStepScalar(name: string, buffer: GPUBuffer, offset: number): void {
  scalarSink?.(name, buffer, offset);
}

const backend = () => tf.backend() as unknown as Backend;
const keyOf = (b: GPUBuffer) => `${b.size}_${b.usage}`;

/** Buffers that live graphs own: kept out of tfjs's pool even when a tensor holding one is freed. */
const owned = new Set<GPUBuffer>();
let releaseHooked = false;
function hookRelease(bm: BufferManager): void {
  if (releaseHooked) return;
  releaseHooked = true;
  const release = bm.releaseBuffer.bind(bm);
  bm.releaseBuffer = (buffer, reuse = true) => {
    release(buffer, reuse);
    if (owned.has(buffer) && reuse) takeFromPool(bm, buffer);
  };
}
/** Removes `buffer` from tfjs's free lists (it was just released, so it is at the end of its list). */
function takeFromPool(bm: BufferManager, buffer: GPUBuffer): void {
  const list = bm.freeBuffers.get(keyOf(buffer));
  const at = list ? list.lastIndexOf(buffer) : -1;
  if (at < 0) return;
  list!.splice(at, 1);
  bm.numFreeBuffers--;
}

/**
 * Runs `fn` (one step through tfjs; it must dispose what it does not return) and records its GPU commands;
 * `recording` is null (and `why` says why) when the step issued something a replay cannot reproduce.
 * `inputs` are the host arrays of this step that change from step to step: an upload whose values are one of
 * them (the same array, or equal contents) is replayed from the caller's next array of that name.
 */
export function capture<T>(fn: () => T, inputs: Record<string, HostArray>): { result: T; recording: Recording | null; why?: string } {
  const be = backend();
  if (be.activeTimers != null) throw new ReplayError('REPLAY_UNSUPPORTED', 'a profiled step (tf.time) cannot be captured: it times every dispatch');
  hookRelease(be.bufferManager);
  // Commands issued before the capture are not part of it.
  be.endComputePassEncoder();
  if (be.commandEncoder) be.submitQueue();

  const bindGroupBuffers = new Map<GPUBindGroup, GPUBuffer[]>();
  const variables = new Map<tf.Variable, GPUBuffer | undefined>();
  for (const v of Object.values(tf.engine().state.registeredVariables)) {
    variables.set(v, be.tensorMap.get(v.dataId)?.resource as GPUBuffer | undefined);
  }
  const rec: Recording = { ops: [], uniforms: new Map(), scalars: [], bindGroupBuffers, boundBefore: new Map(), variables };
  const writes = new Map<GPUBuffer, Uint8Array>();
  const acquired = new Set<GPUBuffer>();
  let failure: string | undefined;
  const fail = (why: string) => { failure ??= why; };

  const { device, queue, bufferManager: bm } = be;
  const saved = { device, queue, ensure: be.ensureCommandEncoderReady, upload: be.uploadToGPU, release: bm.releaseBuffer, acquire: bm.acquireBuffer };
  let pipeline: GPUComputePipeline | null = null;
  let bindGroup: GPUBindGroup | null = null;
  const pass = (real: GPUComputePassEncoder): GPUComputePassEncoder => ({
    setPipeline(p: GPUComputePipeline) { pipeline = p; real.setPipeline(p); },
    setBindGroup(i: number, g: GPUBindGroup) { if (i !== 0) fail('a bind group other than 0'); bindGroup = g; real.setBindGroup(i, g); },
    dispatchWorkgroups(x: number, y = 1, z = 1) {
      rec.ops.push({ kind: 'dispatch', pipeline: pipeline!, bindGroup: bindGroup!, groups: [x, y, z] });
      real.dispatchWorkgroups(x, y, z);
    },
    end() { real.end(); },
  }) as unknown as GPUComputePassEncoder;
  const encoder = (real: GPUCommandEncoder): GPUCommandEncoder => ({
    beginComputePass(d?: GPUComputePassDescriptor) {
      if (d?.timestampWrites) fail('timestamp queries');
      return pass(real.beginComputePass(d));
    },
    copyBufferToBuffer(src: GPUBuffer, so: number, dst: GPUBuffer, dOff: number, size: number) {
      // Staging copies of uploads are recorded as the upload itself (uploadToGPU below).
      if (!(src.usage & GPUBufferUsage.MAP_WRITE)) {
        if (dst.usage & GPUBufferUsage.MAP_READ) fail('a read of GPU data inside the step');
        rec.ops.push({ kind: 'copy', src, srcOffset: so, dst, dstOffset: dOff, size });
      }
      real.copyBufferToBuffer(src, so, dst, dOff, size);
    },
    finish(d?: GPUCommandBufferDescriptor) { return real.finish(d); },
    resolveQuerySet() { fail('query sets'); },
    copyBufferToTexture() { fail('texture copies'); },
  }) as unknown as GPUCommandEncoder;

  be.device = new Proxy(device, {
    get(t, p) {
      if (p === 'createBindGroup') {
        return (d: GPUBindGroupDescriptor) => {
          const g = t.createBindGroup(d);
          const bufs: GPUBuffer[] = [];
          for (const e of d.entries) {
            const r = e.resource as { buffer?: GPUBuffer };
            if (r.buffer) bufs.push(r.buffer);
            else fail('a binding that is not a buffer');
          }
          bindGroupBuffers.set(g, bufs);
          return g;
        };
      }
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  be.queue = new Proxy(queue, {
    get(t, p) {
      if (p === 'writeBuffer') {
        return (b: GPUBuffer, off: number, data: ArrayBufferView | ArrayBuffer, dOff = 0, size?: number) => {
          if (!(b.usage & GPUBufferUsage.UNIFORM) || off !== 0) fail('a queue write to a buffer that is not a uniform buffer');
          const view = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
          writes.set(b, view.slice(dOff, size === undefined ? undefined : dOff + size));
          t.writeBuffer(b, off, data, dOff, size);
        };
      }
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  be.ensureCommandEncoderReady = () => {
    if (!be.commandEncoder) be.commandEncoder = encoder(device.createCommandEncoder());
  };
  be.uploadToGPU = (dataId: unknown) => {
    const d = be.tensorMap.get(dataId)!;
    const values = d.resource == null ? d.values : null;
    saved.upload.call(be, dataId);
    const buffer = d.resource as GPUBuffer;
    if (!acquired.has(buffer)) rec.boundBefore.set(dataId, buffer);
    if (values) {
      const copy = (d.dtype === 'float32' ? Float32Array.from(values) : Int32Array.from(values)) as HostArray;
      // The caller's own array, or (for arrays the model builds itself, e.g. dropout masks) equal contents;
      // short arrays only by identity, so that a small constant never passes for an input.
      const input = Object.keys(inputs).find((k) => inputs[k] === values) ??
        (copy.length >= 256 ? Object.keys(inputs).find((k) => sameValues(inputs[k]!, copy)) : undefined);
      rec.ops.push({ kind: 'upload', dst: d.resource as GPUBuffer, values: copy, ...(input ? { input } : {}) });
    }
  };
  // Each dispatch keeps its own uniform buffer: tfjs returns them to the pool at every submit.
  const release = saved.release;
  bm.releaseBuffer = (buffer, reuse = true) => {
    release.call(bm, buffer, reuse);
    if (reuse && buffer.usage & GPUBufferUsage.UNIFORM) {
      takeFromPool(bm, buffer);
      uniformsKept.add(buffer);
    }
  };
  const uniformsKept = new Set<GPUBuffer>();
  bm.acquireBuffer = (size, usage, mapped, reuse) => {
    const b = saved.acquire.call(bm, size, usage, mapped, reuse);
    acquired.add(b);
    return b;
  };
  scalarSink = (name, buffer, offset) => rec.scalars.push({ name, buffer, offset });

  let result: T;
  try {
    result = fn();
    be.endComputePassEncoder();
    if (be.commandEncoder) be.submitQueue();
  } finally {
    be.device = device;
    be.queue = queue;
    be.ensureCommandEncoderReady = saved.ensure;
    be.uploadToGPU = saved.upload;
    bm.releaseBuffer = release;
    bm.acquireBuffer = saved.acquire;
    scalarSink = null;
  }
  for (const op of rec.ops) {
    if (op.kind !== 'dispatch') continue;
    const u = bindGroupBuffers.get(op.bindGroup)?.find((b) => b.usage & GPUBufferUsage.UNIFORM);
    if (u) rec.uniforms.set(op.bindGroup, { buffer: u, bytes: writes.get(u) ?? new Uint8Array(0) });
  }
  // Uniform buffers of dispatches that were recorded stay out of the pool: the graph owns them (seal).
  const used = new Set([...rec.uniforms.values()].map((u) => u.buffer));
  for (const b of uniformsKept) if (!used.has(b)) returnToPool(bm, b);
  // The step ran in full either way; only its recording is unusable.
  if (failure) {
    for (const b of used) returnToPool(bm, b);
    return { result: result!, recording: null, why: `the step issues ${failure}` };
  }
  return { result: result!, recording: rec };
}

function sameValues(a: HostArray, b: HostArray): boolean {
  if (a.length !== b.length || (a instanceof Float32Array) !== (b instanceof Float32Array)) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

function returnToPool(bm: BufferManager, b: GPUBuffer): void {
  const key = keyOf(b);
  if (!bm.freeBuffers.has(key)) bm.freeBuffers.set(key, []);
  bm.freeBuffers.get(key)!.push(b);
  bm.numFreeBuffers++;
}

/** Gives back the uniform buffers a recording holds (a capture that is only compared, or not sealed); once. */
export function discardRecording(rec: Recording): void {
  if (discarded.has(rec)) return;
  discarded.add(rec);
  const bm = backend().bufferManager;
  for (const u of rec.uniforms.values()) returnToPool(bm, u.buffer);
}
/** Recordings whose buffers went back to the pool (they can still be compared). */
const discarded = new WeakSet<Recording>();

/**
 * Why two captured steps are not the same graph with different inputs, or null when they are: the same
 * pipelines, workgroup counts, copies and uploads in the same order; the same uniforms except the named
 * per-step scalars; the same uploaded values except the named inputs. Buffers may differ (tfjs's pool).
 */
export function diffRecordings(a: Recording, b: Recording): string | null {
  if (a.ops.length !== b.ops.length) return `${a.ops.length} vs ${b.ops.length} commands`;
  const skip = (r: Recording) => {
    const m = new Map<GPUBuffer, Set<number>>();
    for (const s of r.scalars) (m.get(s.buffer) ?? m.set(s.buffer, new Set()).get(s.buffer)!).add(s.offset);
    return m;
  };
  const [sa, sb] = [skip(a), skip(b)];
  for (let i = 0; i < a.ops.length; i++) {
    const x = a.ops[i]!;
    const y = b.ops[i]!;
    const at = `command ${i} of ${a.ops.length}`;
    if (x.kind !== y.kind) return `${at}: ${x.kind} vs ${y.kind}`;
    if (x.kind === 'dispatch' && y.kind === 'dispatch') {
      if (x.pipeline !== y.pipeline) return `${at}: another pipeline`;
      if (x.groups.join() !== y.groups.join()) return `${at}: workgroups ${x.groups} vs ${y.groups}`;
      const ua = a.uniforms.get(x.bindGroup);
      const ub = b.uniforms.get(y.bindGroup);
      if (!ua !== !ub) return `${at}: uniforms in one step only`;
      if (ua && ub) {
        if (ua.bytes.length !== ub.bytes.length) return `${at}: uniform sizes differ`;
        const na = sa.get(ua.buffer);
        const nb = sb.get(ub.buffer);
        if ([...(na ?? [])].join() !== [...(nb ?? [])].join()) return `${at}: per-step scalars at different places`;
        for (let k = 0; k < ua.bytes.length; k++) {
          if (ua.bytes[k] !== ub.bytes[k] && !na?.has(k & ~3)) return `${at}: uniform byte ${k} differs and is not a per-step scalar`;
        }
      }
    } else if (x.kind === 'copy' && y.kind === 'copy') {
      if (x.size !== y.size || x.srcOffset !== y.srcOffset || x.dstOffset !== y.dstOffset) return `${at}: copies differ`;
    } else if (x.kind === 'upload' && y.kind === 'upload') {
      if (x.input !== y.input) return `${at}: upload of input ${x.input ?? '(constant)'} vs ${y.input ?? '(constant)'}`;
      if (x.values.length !== y.values.length) return `${at}: upload sizes differ`;
      if (!x.input && !sameValues(x.values, y.values)) return `${at}: an upload of ${x.values.length} values changes from step to step and is not a named input`;
    }
  }
  return null;
}

/** A tensor read from outside the step: it must still live in the same buffer at each replay. */
interface LiveIn { variable?: tf.Variable; dataId?: unknown; buffer: GPUBuffer }

/**
 * A captured step, replayable. Built from a Recording by seal() right after its capture (before anything else
 * runs on the backend), with the variables that existed before the capture (`before`: buffer of each).
 */
export class StepGraph {
  private readonly uploadBuffers = new Map<Op, GPUBuffer>();
  /** Uploads of dropout masks, made on the GPU instead: per step only their stream key is written. */
  private readonly masks = new Map<Op, MaskDispatch>();
  private readonly inputs = new Map<string, { size: number; buffers: GPUBuffer[] }>();
  private readonly readbacks: { src: GPUBuffer; staging: GPUBuffer; size: number }[] = [];
  private readonly carried: { from: GPUBuffer; to: GPUBuffer }[] = [];
  private readonly liveIn: LiveIn[] = [];
  private readonly buffers = new Set<GPUBuffer>();
  private disposed = false;
  /** Whether the input staging buffers are mapped for the host to fill (at creation, then after each read). */
  private inputsMapped = true;
  /** Dispatches per replay. */
  readonly dispatches: number;

  private constructor(private readonly rec: Recording) {
    this.dispatches = rec.ops.filter((o) => o.kind === 'dispatch').length;
  }

  /**
   * Seals a recording into a graph: takes every buffer it touches out of tfjs's pool, decides which tensors are
   * read from outside (they must stay where they are) and which variables moved (carried state), and prepares
   * upload and readback buffers. `outputs` are tensors made by the step whose values each replay reads back.
   */
  static seal(rec: Recording, outputs: readonly tf.Tensor[], masks: Record<string, { p: number }> = {}): StepGraph {
    const g = new StepGraph(rec);
    const be = backend();
    const { device } = be;
    const { bindGroupBuffers } = rec;
    const touched = new Set<GPUBuffer>();
    for (const op of rec.ops) {
      if (op.kind === 'dispatch') for (const b of bindGroupBuffers.get(op.bindGroup) ?? []) touched.add(b);
      else if (op.kind === 'copy') { touched.add(op.src); touched.add(op.dst); }
      else touched.add(op.dst);
    }
    const bufferOf = (t: { dataId: unknown }) => be.tensorMap.get(t.dataId)?.resource as GPUBuffer | undefined;
    // Variables: updated in place (same buffer: a fixed live-in), or moved to a buffer the step made.
    const fixed = new Set<GPUBuffer>();
    const ofVariables = new Set<GPUBuffer>();
    for (const [v, old] of rec.variables) {
      if (old) ofVariables.add(old);
      if (v.isDisposed) continue;
      const now = bufferOf(v);
      if (now === undefined) continue;
      if (old === now) {
        if (touched.has(now)) { g.liveIn.push({ variable: v, buffer: now }); fixed.add(now); }
      } else if (old !== undefined && touched.has(old) && touched.has(now)) {
        g.carried.push({ from: now, to: old });
        g.liveIn.push({ variable: v, buffer: now });
      } else if (touched.has(now) || (old !== undefined && touched.has(old))) {
        throw new ReplayError('REPLAY_UNSUPPORTED', 'a variable was given a value the step does not compute on the GPU');
      }
    }
    // A carried value copied into a buffer that another carried value is copied out of would need an order.
    const sources = new Set(g.carried.map((c) => c.from));
    if (g.carried.some((c) => sources.has(c.to))) {
      throw new ReplayError('REPLAY_UNSUPPORTED', 'two variables swapped buffers during the step');
    }
    // Other tensors made before the capture that the step reads (cached constants): they must stay.
    for (const [dataId, buffer] of rec.boundBefore) {
      if (ofVariables.has(buffer)) continue;
      if (be.tensorMap.get(dataId)?.resource !== buffer) {
        throw new ReplayError('REPLAY_UNSUPPORTED', 'the step reads a tensor made before it and frees it: a replay would read a stale value');
      }
      g.liveIn.push({ dataId, buffer });
      fixed.add(buffer);
    }
    for (const b of touched) if (!fixed.has(b)) g.buffers.add(b);
    // Checked before the graph takes anything: a throw from seal leaves tfjs's pool as it was.
    if (outputs.some((t) => !g.buffers.has(bufferOf(t)!))) {
      throw new ReplayError('REPLAY_UNSUPPORTED', 'an output of the step is not written by it on the GPU: return a tensor the step computes');
    }
    const bm = be.bufferManager;
    for (const b of g.buffers) owned.add(b);
    for (const [key, list] of bm.freeBuffers) {
      const keep = list.filter((b) => !owned.has(b));
      bm.numFreeBuffers -= list.length - keep.length;
      bm.freeBuffers.set(key, keep);
    }
    // Uploads: constants are written once now; named inputs at each replay. One source buffer each, copied
    // into place where the upload was in the stream (its destination may be reused later in the step).
    for (const op of rec.ops) {
      if (op.kind !== 'upload') continue;
      const mask = op.input !== undefined ? masks[op.input] : undefined;
      if (mask) {
        g.masks.set(op, makeMaskDispatch(device, op.dst, op.values.length, mask.p));
        continue;
      }
      const bytes = op.values.byteLength;
      // Inputs: mapped staging buffers the host fills in place (one copy, and the loader's batches live in
      // SharedArrayBuffers, which Dawn's queue.writeBuffer does not take); constants: written once, here.
      const src = device.createBuffer({
        size: Math.ceil(bytes / 4) * 4, mappedAtCreation: !!op.input,
        usage: GPUBufferUsage.COPY_SRC | (op.input ? GPUBufferUsage.MAP_WRITE : GPUBufferUsage.COPY_DST),
      });
      g.uploadBuffers.set(op, src);
      if (op.input) {
        const e = g.inputs.get(op.input) ?? { size: op.values.length, buffers: [] };
        e.buffers.push(src);
        g.inputs.set(op.input, e);
      } else {
        device.queue.writeBuffer(src, 0, op.values);
      }
    }
    for (const [t, src] of outputs.map((t) => [t, bufferOf(t)!] as const)) {
      const size = t.size * 4;
      g.readbacks.push({ src, size, staging: device.createBuffer({ size, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ }) });
    }
    return g;
  }

  /** Why the graph cannot run now (a tensor it reads has moved or gone), or null. */
  invalidReason(): string | null {
    if (this.disposed) return 'the graph was disposed';
    const map = backend().tensorMap;
    for (const l of this.liveIn) {
      const id = l.variable ? (l.variable.isDisposed ? undefined : l.variable.dataId) : l.dataId;
      if (id === undefined || map.get(id)?.resource !== l.buffer) return 'a tensor the step reads was reassigned or freed since the capture';
    }
    return null;
  }

  /** Names and sizes (elements) of the per-step inputs. */
  inputSizes(): Map<string, number> {
    return new Map([...this.inputs].map(([k, v]) => [k, v.size]));
  }

  /**
   * Runs the recorded step again with new inputs (every name, the same sizes) and per-step scalars. Returns
   * false, having done nothing, when invalidReason() is not null. Outputs are read by readOutputs().
   */
  replay(inputs: Record<string, HostArray>, scalars: Record<string, number>, maskKeys: Record<string, number> = {}): boolean {
    if (this.invalidReason() !== null) return false;
    const be = backend();
    // Commands tfjs has pending go first.
    be.endComputePassEncoder();
    if (be.commandEncoder) be.submitQueue();
    const { device, queue } = be;
    for (const [name, e] of this.inputs) {
      const v = inputs[name];
      if (!v || v.length !== e.size) {
        throw new ReplayError('REPLAY_MISMATCH', `replay: input '${name}' must have ${e.size} values, got ${v?.length ?? 'none'}`);
      }
      if (!this.inputsMapped) throw new ReplayError('REPLAY_MISMATCH', 'replay: readOutputs() of the previous replay must finish first');
      for (const b of e.buffers) {
        const range = b.getMappedRange();
        (v instanceof Float32Array ? new Float32Array(range) : new Int32Array(range)).set(v);
        b.unmap();
      }
    }
    this.inputsMapped = this.inputs.size === 0;
    const one = new Float32Array(1);
    for (const s of this.rec.scalars) {
      const v = scalars[s.name];
      if (v === undefined) throw new ReplayError('REPLAY_MISMATCH', `replay: per-step scalar '${s.name}' missing`);
      one[0] = v;
      queue.writeBuffer(s.buffer, s.offset, one);
    }
    const word = new Uint32Array(1);
    for (const [op, m] of this.masks) {
      const key = maskKeys[(op as { input: string }).input];
      if (key === undefined) throw new ReplayError('REPLAY_MISMATCH', `replay: the stream key of mask '${(op as { input: string }).input}' is missing`);
      word[0] = key;
      queue.writeBuffer(m.uniforms, 4, word);
    }
    const enc = device.createCommandEncoder();
    for (const c of this.carried) enc.copyBufferToBuffer(c.from, 0, c.to, 0, c.from.size);
    let pass: GPUComputePassEncoder | null = null;
    let pipeline: GPUComputePipeline | null = null;
    for (const op of this.rec.ops) {
      if (op.kind === 'dispatch') {
        if (!pass) { pass = enc.beginComputePass(); pipeline = null; }
        if (op.pipeline !== pipeline) pass.setPipeline((pipeline = op.pipeline));
        pass.setBindGroup(0, op.bindGroup);
        pass.dispatchWorkgroups(op.groups[0], op.groups[1], op.groups[2]);
        continue;
      }
      const mask = this.masks.get(op);
      if (mask) {
        if (!pass) pass = enc.beginComputePass();
        pass.setPipeline((pipeline = mask.pipeline));
        pass.setBindGroup(0, mask.bindGroup);
        pass.dispatchWorkgroups(mask.groups[0], mask.groups[1], 1);
        continue;
      }
      if (pass) { pass.end(); pass = null; }
      if (op.kind === 'copy') enc.copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.size);
      else enc.copyBufferToBuffer(this.uploadBuffers.get(op)!, 0, op.dst, 0, Math.ceil(op.values.byteLength / 4) * 4);
    }
    pass?.end();
    for (const r of this.readbacks) enc.copyBufferToBuffer(r.src, 0, r.staging, 0, r.size);
    queue.submit([enc.finish()]);
    // Values tfjs cached on the host for these variables are now stale; the GPU buffer is the truth.
    for (const l of this.liveIn) if (l.variable) be.tensorMap.get(l.variable.dataId)!.values = null;
    return true;
  }

  /** The outputs of the last replay (waits for the GPU); maps the input buffers again for the next replay. */
  async readOutputs(): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const r of this.readbacks) {
      await r.staging.mapAsync(GPUMapMode.READ);
      out.push(new Float32Array(r.staging.getMappedRange().slice(0)));
      r.staging.unmap();
    }
    if (!this.inputsMapped) {
      await Promise.all([...this.inputs.values()].flatMap((e) => e.buffers.map((b) => b.mapAsync(GPUMapMode.WRITE))));
      this.inputsMapped = true;
    }
    return out;
  }

  /** Returns the buffers to tfjs's pool (those no tensor holds) and frees the graph's own. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const bm = backend().bufferManager;
    const held = new Set([...bm.usedBuffers.values()].flat());
    for (const b of this.buffers) {
      owned.delete(b);
      if (!held.has(b)) returnToPool(bm, b);
    }
    for (const b of this.uploadBuffers.values()) b.destroy();
    for (const m of this.masks.values()) m.uniforms.destroy();
    for (const r of this.readbacks) r.staging.destroy();
  }
}

interface MaskDispatch { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; uniforms: GPUBuffer; groups: [number, number] }

/**
 * prng.ts's dropout mask on the GPU, value for value: element i is kept (1/(1-p) as float32) when
 * uniformAt(key, i) >= p, i.e. (h + 0.5) / 2^32 >= p with h = mix32(mix32(key + i) ^ key), i.e. the integer
 * h >= ceil(p * 2^32 - 0.5): the same decision in u32 arithmetic (Math.imul and >>> are WGSL's u32 * and >>).
 */
const MASK_WGSL = `
  fn mix32(v : u32) -> u32 {
    var x = v;
    x ^= x >> 16u; x *= 0x7feb352du; x ^= x >> 15u; x *= 0x846ca68bu; x ^= x >> 16u;
    return x;
  }
  @group(0) @binding(0) var<storage, read_write> mask : array<f32>;
  struct U { n : u32, key : u32, threshold : u32, scale : f32, };
  @group(0) @binding(1) var<uniform> u : U;
  @compute @workgroup_size(256)
  fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i < u.n) { mask[i] = select(0.0, u.scale, mix32(mix32(u.key + i) ^ u.key) >= u.threshold); }
  }`;
const maskPipelines = new WeakMap<GPUDevice, GPUComputePipeline>();

function makeMaskDispatch(device: GPUDevice, dst: GPUBuffer, n: number, p: number): MaskDispatch {
  let pipeline = maskPipelines.get(device);
  if (!pipeline) {
    pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: MASK_WGSL }), entryPoint: 'main' } });
    maskPipelines.set(device, pipeline);
  }
  const uniforms = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  const head = new ArrayBuffer(16);
  const threshold = Math.ceil(p * 2 ** 32 - 0.5);
  new Uint32Array(head, 0, 3).set([n, 0, Math.min(threshold, 2 ** 32 - 1)]);
  new Float32Array(head, 12, 1)[0] = 1 / (1 - p);
  device.queue.writeBuffer(uniforms, 0, head);
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: dst } }, { binding: 1, resource: { buffer: uniforms } }] });
  const groups = Math.ceil(n / 256);
  const x = Math.min(groups, 32768);
  return { pipeline, bindGroup, uniforms, groups: [x, Math.ceil(groups / x)] };
}

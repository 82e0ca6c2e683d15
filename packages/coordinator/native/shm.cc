// Shared-memory data plane primitives (src/shm-plane.ts drives them). Built at install by tools/build-native.mjs;
// without it the shm plane is unavailable and the job uses the TCP peer plane.
//
//   create(path, bytes, ranks, chunkElems[, sharedElems])    new segment (path.tmp, initialised, renamed to path);
//                                                             sharedElems: each rank's registered slot (header word 8)
//   open(path, bytes) -> ArrayBuffer                          map an existing segment (throws with .code = errno name);
//                                                             bytes 0: whatever size rank 0 made it
//   attach(seg, rank) -> mapped                               records this pid, counts the ranks that mapped it
//   unlink(path) / unmap(seg)
//   fd(seg) -> fd                                             the segment's open descriptor: a thread of this process
//                                                             maps the (unlinked) segment again at /proc/self/fd/<fd>
//   signal(seg, rank, q, step)                                rank's progress counter <- q * 2^24 + step, wake waiters
//   wait(seg, ranks, me, q, step, sliceMs) -> 0 every other rank reached (q, step); 1 the slice ended first;
//                                             2 the abort word is set; 3 + r rank r's process no longer exists
//   abort(seg, word)                                          first abort wins; wakes every waiter
//   reduce(seg, inBase, stride, ranks, mine, outOff, quantize) mean over ranks (see below), into seg and `mine`
//   quantize(seg, off, src)                                   seg[off..] <- float(binary16(src)), round to nearest even
//   reduceSlots(seg, base, stride, ranks, count, quantize)    registered slots: the mean over the R slots at
//                                                             base + r * stride, written back into every slot
//
// The mean is the project's exact mean (src/reduce.ts): float64 sum in rank order, then * (1/R) for a power of
// two R, else / R, one rounding to float32; with quantize, the result is rounded to binary16 and widened again,
// as the other planes do for fp16. No -ffast-math, and no FMA can form (the scale multiplies a finished sum).
#include <node_api.h>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <mutex>
#include <unordered_map>

namespace {

constexpr uint32_t kMagic = 0x4d485347;  // "GSHM"
constexpr uint32_t kVersion = 1;

// Segment header. Each rank's line is a cache line of its own, so a rank's counter stores do not bounce the
// others' lines. The data area (laid out by shm-plane.ts) starts at headerBytes(ranks).
struct Header {
  uint32_t magic, version, ranks, chunkElems;
  std::atomic<uint32_t> mapped;   // ranks that mapped the segment (the one that makes it `ranks` unlinks it)
  std::atomic<uint32_t> abortWord;  // 0, or (code << 16) | (rank + 1) of the first rank that gave up
  std::atomic<uint32_t> bell;     // futex word: bumped by every signal
  std::atomic<uint32_t> sleepers; // waiters inside futex_wait (signal skips the syscall when 0)
  uint32_t sharedElems;           // floats of each rank's registered slot (0: none); ranks != 0 read the layout here
  uint8_t pad[64 - 36];
};
struct RankLine {
  std::atomic<uint64_t> counter;
  std::atomic<uint32_t> pid;
  uint8_t pad[64 - 12];
};
static_assert(sizeof(Header) == 64 && sizeof(RankLine) == 64, "layout");

RankLine* lines(uint8_t* seg) { return reinterpret_cast<RankLine*>(seg + sizeof(Header)); }

// The descriptor stays open while the mapping lives: once every rank mapped the segment its name is unlinked, and
// /proc/self/fd/<fd> is then the only way for a worker thread of this process (another V8 isolate, which cannot
// share this ArrayBuffer) to map the same pages (overlap-thread.ts).
struct Mapping { void* p; size_t n; int fd; bool live; };
// Live mappings by address, so that unmap() can tell the GC finalizer (which still runs later) not to unmap again:
// by then the address may belong to another mapping.
std::unordered_map<void*, Mapping*> mappings;
std::mutex mappingsLock;  // worker threads share the addon

void finalizeMapping(napi_env, void*, void* hint) {
  auto* m = static_cast<Mapping*>(hint);
  std::lock_guard<std::mutex> g(mappingsLock);
  if (m->live) { munmap(m->p, m->n); close(m->fd); mappings.erase(m->p); }
  delete m;
}

double num(napi_env env, napi_value v) { double d = 0; napi_get_value_double(env, v, &d); return d; }

std::string str(napi_env env, napi_value v) {
  char buf[512]; size_t n = 0;
  if (napi_get_value_string_utf8(env, v, buf, sizeof buf, &n) != napi_ok) return "";
  return std::string(buf, n);
}

napi_value throwErrno(napi_env env, const char* what, const std::string& path, int err) {
  std::string msg = std::string(what) + " " + path + ": " + std::strerror(err);
  napi_value code, message, error;
  const char* name = err == ENOENT ? "ENOENT" : err == EEXIST ? "EEXIST" : err == EACCES ? "EACCES" : err == ENOSPC ? "ENOSPC" : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg.c_str(), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_throw(env, error);
  return nullptr;
}

napi_value wrap(napi_env env, void* p, size_t n, int fd) {
  napi_value ab;
  auto* m = new Mapping{p, n, fd, true};
  if (napi_create_external_arraybuffer(env, p, n, finalizeMapping, m, &ab) != napi_ok) {
    munmap(p, n);
    close(fd);
    delete m;
    napi_throw_error(env, "EIO", "cannot wrap the shared segment in an ArrayBuffer");
    return nullptr;
  }
  std::lock_guard<std::mutex> g(mappingsLock);
  mappings[p] = m;
  return ab;
}

bool seg(napi_env env, napi_value v, uint8_t** p, size_t* len) {
  void* data;
  if (napi_get_arraybuffer_info(env, v, &data, len) != napi_ok || !data) return false;
  *p = static_cast<uint8_t*>(data);
  return true;
}

bool floats(napi_env env, napi_value v, float** p, size_t* n) {
  napi_typedarray_type t; napi_value ab; size_t off; void* data;
  if (napi_get_typedarray_info(env, v, &t, n, &data, &ab, &off) != napi_ok || t != napi_float32_array) return false;
  *p = static_cast<float*>(data);
  return true;
}

template <size_t N>
bool args(napi_env env, napi_callback_info info, napi_value (&argv)[N]) {
  size_t argc = N;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  return argc == N;
}

napi_value Create(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  size_t argc = 5;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 4 && argc != 5) { napi_throw_type_error(env, nullptr, "create(path, bytes, ranks, chunkElems[, sharedElems])"); return nullptr; }
  std::string path = str(env, argv[0]), tmp = path + ".tmp";
  size_t bytes = num(env, argv[1]);
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return throwErrno(env, "cannot create", tmp, errno);
  // Reserve the pages now: on a full tmpfs (Docker's default /dev/shm is 64 MiB) a sparse file would map fine and
  // then kill the process with SIGBUS at the first write past the free space; this fails with ENOSPC instead.
  int fe = posix_fallocate(fd, 0, bytes);
  if (fe != 0) { close(fd); unlink(tmp.c_str()); return throwErrno(env, "cannot reserve space for", tmp, fe); }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) { int e = errno; close(fd); unlink(tmp.c_str()); return throwErrno(env, "cannot map", tmp, e); }
  auto* h = static_cast<Header*>(p);
  h->magic = kMagic; h->version = kVersion;
  h->ranks = num(env, argv[2]); h->chunkElems = num(env, argv[3]);
  h->sharedElems = argc == 5 ? num(env, argv[4]) : 0;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Renamed only when initialised: whoever opens `path` sees a whole header.
  if (rename(tmp.c_str(), path.c_str()) != 0) { int e = errno; munmap(p, bytes); close(fd); unlink(tmp.c_str()); return throwErrno(env, "cannot publish", path, e); }
  return wrap(env, p, bytes, fd);
}

napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args(env, info, argv)) { napi_throw_type_error(env, nullptr, "open(path, bytes)"); return nullptr; }
  std::string path = str(env, argv[0]);
  size_t bytes = num(env, argv[1]);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return throwErrno(env, "cannot open", path, errno);
  struct stat st;
  if (fstat(fd, &st) != 0 || (bytes != 0 && (size_t)st.st_size != bytes) || (size_t)st.st_size < sizeof(Header)) {
    close(fd);
    return throwErrno(env, "unexpected size of", path, EIO);
  }
  if (bytes == 0) bytes = st.st_size;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) { int e = errno; close(fd); return throwErrno(env, "cannot map", path, e); }
  auto* h = static_cast<Header*>(p);
  if (h->magic != kMagic || h->version != kVersion) { munmap(p, bytes); close(fd); return throwErrno(env, "not a segment of this version:", path, EIO); }
  return wrap(env, p, bytes, fd);
}

napi_value Unlink(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, argv)) return nullptr;
  std::string path = str(env, argv[0]);
  unlink(path.c_str());
  unlink((path + ".tmp").c_str());
  return nullptr;
}

napi_value Unmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, argv)) return nullptr;
  uint8_t* p; size_t n;
  if (!seg(env, argv[0], &p, &n)) return nullptr;
  int fd;
  {
    std::lock_guard<std::mutex> g(mappingsLock);
    auto it = mappings.find(p);
    if (it == mappings.end()) return nullptr;
    it->second->live = false;
    fd = it->second->fd;
    mappings.erase(it);
  }
  napi_detach_arraybuffer(env, argv[0]);
  munmap(p, n);
  close(fd);
  return nullptr;
}

napi_value Fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) { napi_throw_type_error(env, nullptr, "fd(seg)"); return nullptr; }
  int fd = -1;
  {
    std::lock_guard<std::mutex> g(mappingsLock);
    auto it = mappings.find(p);
    if (it != mappings.end()) fd = it->second->fd;
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

napi_value Attach(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) { napi_throw_type_error(env, nullptr, "attach(seg, rank)"); return nullptr; }
  int r = num(env, argv[1]);
  lines(p)[r].pid.store(getpid());
  uint32_t mapped = reinterpret_cast<Header*>(p)->mapped.fetch_add(1) + 1;
  napi_value out;
  napi_create_uint32(env, mapped, &out);
  return out;
}

void ring(Header* h) {
  h->bell.fetch_add(1);
  if (h->sleepers.load() > 0) syscall(SYS_futex, reinterpret_cast<uint32_t*>(&h->bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

napi_value Signal(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) { napi_throw_type_error(env, nullptr, "signal(seg, rank, q, step)"); return nullptr; }
  int r = num(env, argv[1]);
  uint64_t v = (uint64_t(num(env, argv[2])) << 24) | uint64_t(num(env, argv[3]));
  lines(p)[r].counter.store(v);
  ring(reinterpret_cast<Header*>(p));
  return nullptr;
}

napi_value Abort(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) return nullptr;
  auto* h = reinterpret_cast<Header*>(p);
  uint32_t expected = 0;
  h->abortWord.compare_exchange_strong(expected, uint32_t(num(env, argv[1])));
  ring(h);
  return nullptr;
}

double nowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

bool gone(uint32_t pid) { return pid != 0 && kill(pid, 0) != 0 && errno == ESRCH; }

// Spins briefly (ranks usually arrive within microseconds of each other; only while ranks <= cores), then yields the core (there may be
// more ranks than cores), then sleeps on the futex in 1 ms steps; every 2 ms it checks that the processes it waits
// for still exist, so a rank that was killed fails the others at once instead of at the round timeout.
napi_value Wait(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) { napi_throw_type_error(env, nullptr, "wait(seg, ranks, me, q, step, sliceMs)"); return nullptr; }
  int R = num(env, argv[1]), me = num(env, argv[2]);
  uint64_t target = (uint64_t(num(env, argv[3])) << 24) | uint64_t(num(env, argv[4]));
  double slice = num(env, argv[5]);
  auto* h = reinterpret_cast<Header*>(p);
  RankLine* L = lines(p);
  int result = 1;
  double t0 = nowMs(), nextPidCheck = t0 + 2;
  // Spinning only pays while every rank can run at once; with more ranks than cores it steals the core of the
  // rank being waited for.
  static const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const long spins = R <= cores ? 2000 : 50;
  for (long iter = 0;; iter++) {
    int missing = -1;
    for (int r = 0; r < R; r++) if (r != me && L[r].counter.load(std::memory_order_acquire) < target) { missing = r; break; }
    if (missing < 0) { result = 0; break; }
    if (h->abortWord.load() != 0) { result = 2; break; }
    if (iter < spins) { __builtin_ia32_pause(); continue; }
    double t = nowMs();
    if (t >= nextPidCheck) {
      nextPidCheck = t + 2;
      int dead = -1;
      for (int r = 0; r < R && dead < 0; r++) if (r != me && L[r].counter.load() < target && gone(L[r].pid.load())) dead = r;
      if (dead >= 0) { result = 3 + dead; break; }
    }
    if (t - t0 >= slice) break;
    if (t - t0 < 0.2) { sched_yield(); continue; }
    uint32_t b = h->bell.load();
    h->sleepers.fetch_add(1);
    bool ready = true;
    for (int r = 0; r < R; r++) if (r != me && L[r].counter.load() < target) { ready = false; break; }
    if (!ready && h->abortWord.load() == 0) {
      timespec ts{0, 1000000};
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&h->bell), FUTEX_WAIT, b, &ts, nullptr, 0);
    }
    h->sleepers.fetch_sub(1);
  }
  napi_value out;
  napi_create_int32(env, result, &out);
  return out;
}

// float32 -> binary16 -> float32, as src/fp16.ts (round to nearest even, NaN -> quiet NaN, overflow -> Inf).
inline float quantize(float x) {
  uint32_t u; std::memcpy(&u, &x, 4);
  uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffff, hbits;
  if (a >= 0x47800000) hbits = sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  else if (a < 0x38800000) {
    float f; std::memcpy(&f, &a, 4);
    f += 0.5f;
    uint32_t v; std::memcpy(&v, &f, 4);
    hbits = sign | (v - 0x3f000000);
  } else hbits = sign | (((a + 0xc8000fffu + ((a >> 13) & 1)) >> 13) & 0xffff);
  // widen exactly
  uint32_t e = (hbits >> 10) & 0x1f, m = hbits & 0x3ff, s = (hbits & 0x8000) << 16, out;
  if (e == 0) {
    float f = float(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    std::memcpy(&out, &f, 4);
    out |= s;
  } else if (e == 31) out = s | 0x7f800000 | (m << 13);
  else out = s | ((e + 112) << 23) | (m << 13);
  float r; std::memcpy(&r, &out, 4);
  return r;
}

napi_value Quantize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint8_t* p; size_t n; float* src; size_t count;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n) || !floats(env, argv[2], &src, &count)) { napi_throw_type_error(env, nullptr, "quantize(seg, off, src)"); return nullptr; }
  size_t off = num(env, argv[1]);
  if (off + count * 4 > n) { napi_throw_range_error(env, nullptr, "quantize: outside the segment"); return nullptr; }
  float* dst = reinterpret_cast<float*>(p + off);
  for (size_t i = 0; i < count; i++) dst[i] = quantize(src[i]);
  return nullptr;
}

// out[i] = mean over r of in_r[i], where in_me is `mine` (this rank's own values, never copied into the segment)
// and in_r = seg + inBase + r * stride otherwise; written to seg + outOff and back into `mine`. Blocks of 512
// elements keep the float64 accumulators in L1 while each input streams once.
napi_value Reduce(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  uint8_t* p; size_t n; float* mine; size_t count;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n) || !floats(env, argv[5], &mine, &count)) {
    napi_throw_type_error(env, nullptr, "reduce(seg, inBase, stride, ranks, me, mine, outOff, quantize)");
    return nullptr;
  }
  size_t inBase = num(env, argv[1]), stride = num(env, argv[2]);
  int R = num(env, argv[3]);
  int me = num(env, argv[4]);
  size_t outOff = num(env, argv[6]);
  bool q = num(env, argv[7]) != 0;
  if (inBase + (R - 1) * stride + count * 4 > n || outOff + count * 4 > n) { napi_throw_range_error(env, nullptr, "reduce: outside the segment"); return nullptr; }
  const bool pow2 = (R & (R - 1)) == 0;
  const double scale = pow2 ? 1.0 / R : double(R);
  float* out = reinterpret_cast<float*>(p + outOff);
  constexpr size_t B = 512;
  alignas(64) double acc[B];
  alignas(64) float own[B];
  for (size_t b0 = 0; b0 < count; b0 += B) {
    const size_t m = count - b0 < B ? count - b0 : B;
    for (size_t i = 0; i < m; i++) own[i] = q ? quantize(mine[b0 + i]) : mine[b0 + i];
    for (int r = 0; r < R; r++) {
      const float* x = r == me ? own : reinterpret_cast<const float*>(p + inBase + r * stride) + b0;
      if (r == 0) for (size_t i = 0; i < m; i++) acc[i] = x[i];
      else for (size_t i = 0; i < m; i++) acc[i] += x[i];
    }
    if (pow2) for (size_t i = 0; i < m; i++) own[i] = float(acc[i] * scale);
    else for (size_t i = 0; i < m; i++) own[i] = float(acc[i] / scale);
    if (q) for (size_t i = 0; i < m; i++) own[i] = quantize(own[i]);
    std::memcpy(out + b0, own, m * 4);
    std::memcpy(mine + b0, own, m * 4);
  }
  return nullptr;
}

// Registered slots (each rank's gradients live in its slot of the segment, written there by the trainer): this rank
// averages its shard [base, base + count) over the R slots at base + r * stride and writes the mean back into that
// shard of every slot, so after every rank did its shard each slot holds the whole mean, in place, with nothing
// copied in or out. Same arithmetic as Reduce (float64 sum in rank order, one rounding; quantize: inputs were rounded
// by their owners, the mean is rounded again). Another rank's shards of this rank's slot are written by it meanwhile:
// the plane's counters keep every rank out of its slot until all shards are done.
napi_value ReduceSlots(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint8_t* p; size_t n;
  if (!args(env, info, argv) || !seg(env, argv[0], &p, &n)) {
    napi_throw_type_error(env, nullptr, "reduceSlots(seg, base, stride, ranks, count, quantize)");
    return nullptr;
  }
  size_t base = num(env, argv[1]), stride = num(env, argv[2]), count = num(env, argv[4]);
  int R = num(env, argv[3]);
  bool q = num(env, argv[5]) != 0;
  if (R < 1 || base % 4 || stride % 4 || base + (R - 1) * stride + count * 4 > n) { napi_throw_range_error(env, nullptr, "reduceSlots: outside the segment"); return nullptr; }
  const bool pow2 = (R & (R - 1)) == 0;
  const double scale = pow2 ? 1.0 / R : double(R);
  constexpr size_t B = 512;
  alignas(64) double acc[B];
  alignas(64) float mean[B];
  for (size_t b0 = 0; b0 < count; b0 += B) {
    const size_t m = count - b0 < B ? count - b0 : B;
    for (int r = 0; r < R; r++) {
      const float* x = reinterpret_cast<const float*>(p + base + r * stride) + b0;
      if (r == 0) for (size_t i = 0; i < m; i++) acc[i] = x[i];
      else for (size_t i = 0; i < m; i++) acc[i] += x[i];
    }
    if (pow2) for (size_t i = 0; i < m; i++) mean[i] = float(acc[i] * scale);
    else for (size_t i = 0; i < m; i++) mean[i] = float(acc[i] / scale);
    if (q) for (size_t i = 0; i < m; i++) mean[i] = quantize(mean[i]);
    for (int r = 0; r < R; r++) std::memcpy(reinterpret_cast<float*>(p + base + r * stride) + b0, mean, m * 4);
  }
  return nullptr;
}

constexpr napi_property_attributes kPlain =
    static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable);

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor fns[] = {
      {"create", nullptr, Create, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"open", nullptr, Open, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"unlink", nullptr, Unlink, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"unmap", nullptr, Unmap, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"fd", nullptr, Fd, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"attach", nullptr, Attach, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"signal", nullptr, Signal, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"wait", nullptr, Wait, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"abort", nullptr, Abort, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"reduce", nullptr, Reduce, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"quantize", nullptr, Quantize, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"reduceSlots", nullptr, ReduceSlots, nullptr, nullptr, nullptr, kPlain, nullptr},
  };
  napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

// Native kernels for the wasm backend, operating in place on the wasm heap (tensor data lives at
// backend.dataIdMap.get(dataId).memoryOffset). Built at install by tools/build-native.mjs with the machine's g++;
// when it is missing or fails, src/native.ts reports "unavailable" and every caller uses its tfjs path.
//   sgemm(heap, a, b, c, M, N, K, transA, transB): C[M,N] = op(A) op(B), row-major, 2 threads
//   maxPoolGrad(heap, x, dy, dx, N, H, W, C, Ho, Wo, k, stride, padTop, padLeft)
//   im2col(heap, x, cols, N, H, W, C, Ho, Wo, k, stride, pad) / col2im(heap, cols, dx, ...): NHWC, HWIO order
//   bnStats / bnReluForward / bnReluBackward: BatchNorm (training) + ReLU, statistics in double
//   copyCols(heap, src, dst, M, srcStride, dstStride, width, srcCol, dstCol): channel concat/split
#include <node_api.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

namespace {

constexpr int MR = 8, NR = 32, KC = 256, MC = 128;
// 2 threads (the machines this targets have 2 cores), or GOOGLENET_NATIVE_THREADS=1: one process per core.
int numThreads() {
  static int n = [] {
    const char* env = std::getenv("GOOGLENET_NATIVE_THREADS");
    if (env && std::atoi(env) == 1) return 1;
    unsigned hw = std::thread::hardware_concurrency();
    return hw <= 1 ? 1 : 2;
  }();
  return n;
}


// Packs rows [i0, i0+mc) x cols [p0, p0+kc) of op(A) into MR-row panels: panel[r][p][ii].
// The packs read operands that the step's previous kernels left in memory, not in cache (replayed with one thread:
// 53 ms of the step's GEMMs on such operands against ~40 ms on cache-hot ones), and the hardware prefetcher does not
// follow their pattern (8 rows at once, or strided rows): each pack asks for the lines of its next panel while it
// copies this one (the step's GEMMs 52-53 -> 45-47 ms replayed, bit-identical results).
void packA(const float* a, int lda, bool t, int i0, int mc, int p0, int kc, float* out) {
  for (int ir = 0; ir < mc; ir += MR, out += (size_t)kc * MR) {
    int mr = std::min(MR, mc - ir);
    if (t) {  // op(A) rows are A columns: row p of A holds the MR values of step p contiguously
      for (int p = 0; p < kc; p++) {
        const float* src = a + (size_t)(p0 + p) * lda + i0 + ir;
        if (p + 8 < kc) __builtin_prefetch(src + (size_t)8 * lda);
        if (ir + MR < mc) __builtin_prefetch(src + 16);  // the next panels' half of this line and the next
        for (int ii = 0; ii < MR; ii++) out[(size_t)p * MR + ii] = ii < mr ? src[ii] : 0.f;
      }
    } else {  // read each A row contiguously, scatter into the panel (which stays in cache)
      for (int ii = 0; ii < MR; ii++) {
        if (ir + MR + ii < mc) {  // the same row of the next panel
          const float* next = a + (size_t)(i0 + ir + MR + ii) * lda + p0;
          for (int p = 0; p < kc; p += 16) __builtin_prefetch(next + p);
        }
        if (ii < mr) {
          const float* src = a + (size_t)(i0 + ir + ii) * lda + p0;
          for (int p = 0; p < kc; p++) out[(size_t)p * MR + ii] = src[p];
        } else {
          for (int p = 0; p < kc; p++) out[(size_t)p * MR + ii] = 0.f;
        }
      }
    }
  }
}

// Packs rows [p0, p0+kc) x cols [j0, j0+nc) of op(B) into NR-column panels: panel[j][p][jj].
void packB(const float* b, int ldb, bool t, int p0, int kc, int j0, int nc, float* out) {
  for (int jr = 0; jr < nc; jr += NR, out += (size_t)kc * NR) {
    int nr = std::min(NR, nc - jr);
    if (!t) {
      for (int p = 0; p < kc; p++) {
        const float* src = b + (size_t)(p0 + p) * ldb + j0 + jr;
        if (p + 8 < kc) __builtin_prefetch(src + (size_t)8 * ldb);
        if (nr == NR) std::memcpy(out + (size_t)p * NR, src, NR * sizeof(float));
        else for (int jj = 0; jj < NR; jj++) out[(size_t)p * NR + jj] = jj < nr ? src[jj] : 0.f;
      }
    } else {  // op(B) columns are B rows: read each contiguously
      for (int jj = 0; jj < NR; jj++) {
        if (jj + 1 < nr) {  // the next row
          const float* next = b + (size_t)(j0 + jr + jj + 1) * ldb + p0;
          for (int p = 0; p < kc; p += 16) __builtin_prefetch(next + p);
        }
        if (jj < nr) {
          const float* src = b + (size_t)(j0 + jr + jj) * ldb + p0;
          for (int p = 0; p < kc; p++) out[(size_t)p * NR + jj] = src[p];
        } else {
          for (int p = 0; p < kc; p++) out[(size_t)p * NR + jj] = 0.f;
        }
      }
    }
  }
}

// C[MR x NR] (+)= Apanel x Bpanel over kc.
void micro(int kc, const float* ap, const float* bp, float* c, int ldc, int mr, int nr, bool accumulate) {
  v16 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = v16{};
  for (int p = 0; p < kc; p++) {
    v16 b0, b1;
    std::memcpy(&b0, bp, 64);
    std::memcpy(&b1, bp + 16, 64);
    for (int i = 0; i < MR; i++) {
      float av = ap[i];
      acc[i][0] += av * b0;
      acc[i][1] += av * b1;
    }
    ap += MR;
    bp += NR;
  }
  for (int i = 0; i < mr; i++) {
    float* row = c + (size_t)i * ldc;
    alignas(64) float tmp[NR];
    std::memcpy(tmp, &acc[i][0], 64);
    std::memcpy(tmp + 16, &acc[i][1], 64);
    if (accumulate) for (int j = 0; j < nr; j++) row[j] += tmp[j];
    else for (int j = 0; j < nr; j++) row[j] = tmp[j];
  }
}

// Single-threaded C[M,N] = op(A) op(B) with explicit leading dimensions.
// Packing buffers per thread slot (0: the calling thread, 1: the helper), kept across calls: first-touch
// pages cost more than the packing itself on these VMs.
std::vector<float> packs[2][2];

void gemm1(const float* a, int lda, bool ta, const float* b, int ldb, bool tb, float* c, int ldc, int M, int N, int K,
           int slot) {
  if (M <= 0 || N <= 0) return;
  std::vector<float>& bpack = packs[slot][0];
  std::vector<float>& apack = packs[slot][1];
  size_t bsize = (size_t)KC * ((N + NR - 1) / NR) * NR;
  if (bpack.size() < bsize) bpack.resize(bsize);
  if (apack.size() < (size_t)KC * MC) apack.resize((size_t)KC * MC);
  for (int p0 = 0; p0 < K; p0 += KC) {
    int kc = std::min(KC, K - p0);
    packB(b, ldb, tb, p0, kc, 0, N, bpack.data());
    for (int i0 = 0; i0 < M; i0 += MC) {
      int mc = std::min(MC, M - i0);
      packA(a, lda, ta, i0, mc, p0, kc, apack.data());
      for (int jr = 0; jr < N; jr += NR) {
        const float* bp = bpack.data() + (size_t)(jr / NR) * kc * NR;
        for (int ir = 0; ir < mc; ir += MR) {
          micro(kc, apack.data() + (size_t)(ir / MR) * kc * MR, bp, c + (size_t)(i0 + ir) * ldc + jr, ldc,
                std::min(MR, mc - ir), std::min(NR, N - jr), p0 > 0);
        }
      }
    }
  }
}

// Two threads when the product is big enough. The wider of M and N is cut into chunks (N: ~8) that both
// threads claim from an atomic counter, so a thread that the OS deschedules (a shared machine) does not hold the other
// one up at a static half.
void sgemm(const float* a, const float* b, float* c, int M, int N, int K, bool ta, bool tb) {
  if (K == 0) { std::fill(c, c + (size_t)M * N, 0.f); return; }
  int lda = ta ? M : K, ldb = tb ? K : N;
  if ((double)M * N * K < 2e6 || numThreads() < 2) { gemm1(a, lda, ta, b, ldb, tb, c, N, M, N, K, 0); return; }
  bool byCols = N >= M && N >= 2 * NR;
  // Row chunks each pack all of B again, so rows are cut only in two (MR-aligned halves).
  int dim = byCols ? N : M, unit = byCols ? NR : MR, parts = byCols ? 8 : 2;
  int chunk = std::max(unit, (dim / parts + unit - 1) / unit * unit);
  int chunks = (dim + chunk - 1) / chunk;
  std::atomic<int> next(0);
  auto work = [&](int slot) {
    for (int i; (i = next.fetch_add(1)) < chunks;) {
      int lo = i * chunk, n = std::min(chunk, dim - lo);
      if (byCols) gemm1(a, lda, ta, tb ? b + (size_t)lo * ldb : b + lo, ldb, tb, c + lo, N, M, n, K, slot);
      else gemm1(ta ? a + lo : a + (size_t)lo * lda, lda, ta, b, ldb, tb, c + (size_t)lo * N, N, n, N, K, slot);
    }
  };
  std::thread t(work, 1);
  work(0);
  t.join();
}

void maxPoolGradRange(const float* x, const float* dy, float* dx, int H, int W, int C, int Ho, int Wo, int k, int s,
                      int pt, int pl, int r0, int r1) {
  std::vector<float> best(C);
  std::vector<int> arg(C);
  for (int r = r0; r < r1; r++) {  // r = n * Ho + oy
    int n = r / Ho, oy = r % Ho;
    const float* xn = x + (size_t)n * H * W * C;
    float* dxn = dx + (size_t)n * H * W * C;
    for (int ox = 0; ox < Wo; ox++) {
      std::fill(best.begin(), best.end(), -__builtin_inff());
      std::fill(arg.begin(), arg.end(), -1);
      for (int i = 0; i < k; i++) {
        int y = oy * s - pt + i;
        if (y < 0 || y >= H) continue;
        for (int j = 0; j < k; j++) {
          int xx = ox * s - pl + j;
          if (xx < 0 || xx >= W) continue;
          int pos = y * W + xx;
          const float* px = xn + (size_t)pos * C;
          for (int c = 0; c < C; c++) {
            if (px[c] > best[c] || arg[c] < 0) { best[c] = px[c]; arg[c] = pos; }
          }
        }
      }
      const float* g = dy + ((size_t)r * Wo + ox) * C;
      for (int c = 0; c < C; c++) if (arg[c] >= 0) dxn[(size_t)arg[c] * C + c] += g[c];
    }
  }
}

// cols[(n, oy, ox), (i, j, c)] = x[n, oy*s - p + i, ox*s - p + j, c] (0 outside): NHWC im2col whose column
// order matches an HWIO filter viewed as [k*k*C, O].
void im2colRange(const float* x, float* cols, int H, int W, int C, int Ho, int Wo, int k, int s, int p, int r0, int r1) {
  size_t rowLen = (size_t)k * k * C;
  for (int r = r0; r < r1; r++) {  // r = n * Ho + oy
    int n = r / Ho, oy = r % Ho;
    const float* xn = x + (size_t)n * H * W * C;
    for (int ox = 0; ox < Wo; ox++) {
      float* out = cols + ((size_t)r * Wo + ox) * rowLen;
      for (int i = 0; i < k; i++) {
        int y = oy * s - p + i;
        for (int j = 0; j < k; j++, out += C) {
          int xx = ox * s - p + j;
          if (y < 0 || y >= H || xx < 0 || xx >= W) std::memset(out, 0, C * sizeof(float));
          else std::memcpy(out, xn + ((size_t)y * W + xx) * C, C * sizeof(float));
        }
      }
    }
  }
}

// The adjoint of im2col: dx[n, y, x, c] = sum of the cols entries that read it. Threads split whole images.
void col2imRange(const float* cols, float* dx, int H, int W, int C, int Ho, int Wo, int k, int s, int p, int n0, int n1) {
  size_t rowLen = (size_t)k * k * C;
  for (int n = n0; n < n1; n++) {
    float* dn = dx + (size_t)n * H * W * C;
    std::memset(dn, 0, (size_t)H * W * C * sizeof(float));
    for (int oy = 0; oy < Ho; oy++) {
      for (int ox = 0; ox < Wo; ox++) {
        const float* in = cols + (((size_t)n * Ho + oy) * Wo + ox) * rowLen;
        for (int i = 0; i < k; i++) {
          int y = oy * s - p + i;
          for (int j = 0; j < k; j++, in += C) {
            int xx = ox * s - p + j;
            if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
            float* d = dn + ((size_t)y * W + xx) * C;
            for (int c = 0; c < C; c++) d[c] += in[c];
          }
        }
      }
    }
  }
}

template <typename F>
void split2(int total, int minWork, F f) {
  if (total >= 2 && minWork > 100000 && numThreads() > 1) {
    int half = total / 2;
    std::thread t(f, 0, half);
    f(half, total);
    t.join();
  } else {
    f(0, total);
  }
}

// ---- BatchNorm (training) + ReLU over x [M, C] (M = N*H*W), per-channel statistics in double ----
// Each helper runs rows [r0, r1) and accumulates into its own partial sums; callers add the two halves.
void bnSums(const float* x, int C, int r0, int r1, const double* mean, double* acc) {
  for (int r = r0; r < r1; r++) {
    const float* row = x + (size_t)r * C;
    if (mean) for (int c = 0; c < C; c++) { double d = row[c] - mean[c]; acc[c] += d * d; }
    else for (int c = 0; c < C; c++) acc[c] += row[c];
  }
}

// mean and biased variance (two passes: no cancellation).
void bnStats(const float* x, float* meanOut, float* varOut, int M, int C) {
  std::vector<double> a(C), b(C), mean(C);
  auto run = [&](const double* m) {
    std::fill(a.begin(), a.end(), 0.0);
    std::fill(b.begin(), b.end(), 0.0);
    if (M >= 64 && (double)M * C > 1e5 && numThreads() > 1) {
      std::thread t(bnSums, x, C, 0, M / 2, m, a.data());
      bnSums(x, C, M / 2, M, m, b.data());
      t.join();
    } else {
      bnSums(x, C, 0, M, m, a.data());
    }
    for (int c = 0; c < C; c++) a[c] = (a[c] + b[c]) / M;
  };
  run(nullptr);
  for (int c = 0; c < C; c++) { mean[c] = a[c]; meanOut[c] = (float)a[c]; }
  run(mean.data());
  for (int c = 0; c < C; c++) varOut[c] = (float)a[c];
}

// y = relu(x * scale + shift), per channel.
void bnApplyRange(const float* x, float* y, const float* scale, const float* shift, int C, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float* in = x + (size_t)r * C;
    float* out = y + (size_t)r * C;
    for (int c = 0; c < C; c++) { float v = in[c] * scale[c] + shift[c]; out[c] = v > 0.f ? v : 0.f; }
  }
}

// g = dy * (y > 0); sums of g and of g * (x - mean) per channel.
void bnGradSums(const float* x, const float* y, const float* dy, const float* mean, int C, int r0, int r1, double* sg, double* sgx) {
  for (int r = r0; r < r1; r++) {
    size_t o = (size_t)r * C;
    for (int c = 0; c < C; c++) {
      float g = y[o + c] > 0.f ? dy[o + c] : 0.f;
      sg[c] += g;
      sgx[c] += (double)g * (x[o + c] - mean[c]);
    }
  }
}

// dx = g * a + (x - mean) * u + v.
void bnGradApply(const float* x, const float* y, const float* dy, const float* mean, const float* a, const float* u,
                 const float* v, float* dx, int C, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    size_t o = (size_t)r * C;
    for (int c = 0; c < C; c++) {
      float g = y[o + c] > 0.f ? dy[o + c] : 0.f;
      dx[o + c] = g * a[c] + (x[o + c] - mean[c]) * u[c] + v[c];
    }
  }
}

template <typename F>
void rows2(int M, int C, F f) {
  if (M >= 64 && (double)M * C > 1e5 && numThreads() > 1) {
    std::thread t(f, 0, M / 2);
    f(M / 2, M);
    t.join();
  } else {
    f(0, M);
  }
}

// dst[r, dstCol + j] = src[r, srcCol + j] for r < M, j < width: one part of a channel concat or split.
void copyColsRange(const float* src, float* dst, int srcStride, int dstStride, int width, int srcCol, int dstCol, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    std::memcpy(dst + (size_t)r * dstStride + dstCol, src + (size_t)r * srcStride + srcCol, width * sizeof(float));
  }
}

// ---- N-API glue ----
bool heapPtr(napi_env env, napi_value v, uint8_t** p, size_t* len) {
  void* data;
  if (napi_get_arraybuffer_info(env, v, &data, len) != napi_ok) return false;
  *p = static_cast<uint8_t*>(data);
  return true;
}
double num(napi_env env, napi_value v) { double d = 0; napi_get_value_double(env, v, &d); return d; }

napi_value Sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 9; napi_value argv[9];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  if (argc != 9 || !heapPtr(env, argv[0], &heap, &len)) { napi_throw_type_error(env, nullptr, "sgemm(heap, a, b, c, M, N, K, ta, tb)"); return nullptr; }
  size_t ao = num(env, argv[1]), bo = num(env, argv[2]), co = num(env, argv[3]);
  int M = num(env, argv[4]), N = num(env, argv[5]), K = num(env, argv[6]);
  bool ta = num(env, argv[7]) != 0, tb = num(env, argv[8]) != 0;
  if (ao + 4.0 * M * K > len || bo + 4.0 * K * N > len || co + 4.0 * M * N > len) { napi_throw_range_error(env, nullptr, "sgemm: out of heap bounds"); return nullptr; }
  sgemm(reinterpret_cast<float*>(heap + ao), reinterpret_cast<float*>(heap + bo), reinterpret_cast<float*>(heap + co), M, N, K, ta, tb);
  return nullptr;
}

napi_value MaxPoolGrad(napi_env env, napi_callback_info info) {
  size_t argc = 14; napi_value argv[14];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  if (argc != 14 || !heapPtr(env, argv[0], &heap, &len)) { napi_throw_type_error(env, nullptr, "maxPoolGrad: bad arguments"); return nullptr; }
  size_t xo = num(env, argv[1]), dyo = num(env, argv[2]), dxo = num(env, argv[3]);
  int N = num(env, argv[4]), H = num(env, argv[5]), W = num(env, argv[6]), C = num(env, argv[7]);
  int Ho = num(env, argv[8]), Wo = num(env, argv[9]), k = num(env, argv[10]), s = num(env, argv[11]);
  int pt = num(env, argv[12]), pl = num(env, argv[13]);
  double in = 4.0 * N * H * W * C, out = 4.0 * N * Ho * Wo * C;
  if (xo + in > len || dxo + in > len || dyo + out > len) { napi_throw_range_error(env, nullptr, "maxPoolGrad: out of heap bounds"); return nullptr; }
  const float* x = reinterpret_cast<float*>(heap + xo);
  const float* dy = reinterpret_cast<float*>(heap + dyo);
  float* dx = reinterpret_cast<float*>(heap + dxo);
  std::memset(dx, 0, (size_t)in);
  int rows = N * Ho;
  // Threads split whole images so that no two write the same dx element.
  if (N >= 2 && numThreads() > 1 && in > 1e5) {
    int half = (N / 2) * Ho;
    std::thread t(maxPoolGradRange, x, dy, dx, H, W, C, Ho, Wo, k, s, pt, pl, 0, half);
    maxPoolGradRange(x, dy, dx, H, W, C, Ho, Wo, k, s, pt, pl, half, rows);
    t.join();
  } else {
    maxPoolGradRange(x, dy, dx, H, W, C, Ho, Wo, k, s, pt, pl, 0, rows);
  }
  return nullptr;
}

// im2col(heap, x, cols, N, H, W, C, Ho, Wo, k, stride, pad) and col2im(heap, cols, dx, ...same).
napi_value Im2col(napi_env env, napi_callback_info info, bool adjoint) {
  size_t argc = 12; napi_value argv[12];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  if (argc != 12 || !heapPtr(env, argv[0], &heap, &len)) { napi_throw_type_error(env, nullptr, "im2col/col2im: bad arguments"); return nullptr; }
  size_t io = num(env, argv[1]), oo = num(env, argv[2]);
  int N = num(env, argv[3]), H = num(env, argv[4]), W = num(env, argv[5]), C = num(env, argv[6]);
  int Ho = num(env, argv[7]), Wo = num(env, argv[8]), k = num(env, argv[9]), s = num(env, argv[10]), p = num(env, argv[11]);
  double img = 4.0 * N * H * W * C, cols = 4.0 * N * Ho * Wo * k * k * C;
  if ((adjoint ? io + cols : io + img) > len || (adjoint ? oo + img : oo + cols) > len) {
    napi_throw_range_error(env, nullptr, "im2col/col2im: out of heap bounds"); return nullptr;
  }
  const float* in = reinterpret_cast<float*>(heap + io);
  float* out = reinterpret_cast<float*>(heap + oo);
  if (adjoint) split2(N, (int)std::min(cols, 2e9), [=](int a, int b) { col2imRange(in, out, H, W, C, Ho, Wo, k, s, p, a, b); });
  else split2(N * Ho, (int)std::min(cols, 2e9), [=](int a, int b) { im2colRange(in, out, H, W, C, Ho, Wo, k, s, p, a, b); });
  return nullptr;
}
napi_value Im2colF(napi_env env, napi_callback_info info) { return Im2col(env, info, false); }
napi_value Col2imF(napi_env env, napi_callback_info info) { return Im2col(env, info, true); }

struct Args {
  napi_env env; size_t argc; napi_value argv[16]; uint8_t* heap = nullptr; size_t len = 0; bool ok = false;
  Args(napi_env e, napi_callback_info info, size_t want) : env(e), argc(16) {
    napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
    ok = argc == want && heapPtr(env, argv[0], &heap, &len);
    if (!ok) napi_throw_type_error(env, nullptr, "googlenet native: bad arguments");
  }
  double n(int i) { return num(env, argv[i]); }
  // A float array of `count` elements at the byte offset in argument i, or null (and a thrown error).
  float* f(int i, double count) {
    double o = n(i);
    if (o < 0 || o + 4 * count > len) { if (ok) napi_throw_range_error(env, nullptr, "googlenet native: out of heap bounds"); ok = false; return nullptr; }
    return reinterpret_cast<float*>(heap + (size_t)o);
  }
};

// bnStats(heap, x, mean, var, M, C)
napi_value BnStats(napi_env env, napi_callback_info info) {
  Args a(env, info, 6);
  if (!a.ok) return nullptr;
  int M = a.n(4), C = a.n(5);
  float *x = a.f(1, (double)M * C), *mean = a.f(2, C), *var = a.f(3, C);
  if (a.ok) bnStats(x, mean, var, M, C);
  return nullptr;
}

// bnReluForward(heap, x, mean, var, gamma, beta, y, M, C, eps)
napi_value BnReluForward(napi_env env, napi_callback_info info) {
  Args a(env, info, 10);
  if (!a.ok) return nullptr;
  int M = a.n(7), C = a.n(8);
  double eps = a.n(9);
  float *x = a.f(1, (double)M * C), *mean = a.f(2, C), *var = a.f(3, C), *gamma = a.f(4, C), *beta = a.f(5, C), *y = a.f(6, (double)M * C);
  if (!a.ok) return nullptr;
  std::vector<float> scale(C), shift(C);
  for (int c = 0; c < C; c++) {
    double sc = gamma[c] / std::sqrt((double)var[c] + eps);
    scale[c] = (float)sc;
    shift[c] = (float)(beta[c] - mean[c] * sc);
  }
  rows2(M, C, [&](int r0, int r1) { bnApplyRange(x, y, scale.data(), shift.data(), C, r0, r1); });
  return nullptr;
}

// bnReluBackward(heap, x, y, dy, mean, var, gamma, dx, dgamma, dbeta, M, C, eps)
napi_value BnReluBackward(napi_env env, napi_callback_info info) {
  Args a(env, info, 13);
  if (!a.ok) return nullptr;
  int M = a.n(10), C = a.n(11);
  double eps = a.n(12);
  double mc = (double)M * C;
  float *x = a.f(1, mc), *y = a.f(2, mc), *dy = a.f(3, mc), *mean = a.f(4, C), *var = a.f(5, C), *gamma = a.f(6, C);
  float *dx = a.f(7, mc), *dgamma = a.f(8, C), *dbeta = a.f(9, C);
  if (!a.ok) return nullptr;
  std::vector<double> sg0(C), sgx0(C), sg1(C), sgx1(C);
  if (M >= 64 && mc > 1e5 && numThreads() > 1) {
    std::thread t(bnGradSums, x, y, dy, mean, C, 0, M / 2, sg0.data(), sgx0.data());
    bnGradSums(x, y, dy, mean, C, M / 2, M, sg1.data(), sgx1.data());
    t.join();
  } else {
    bnGradSums(x, y, dy, mean, C, 0, M, sg0.data(), sgx0.data());
  }
  std::vector<float> av(C), uv(C), vv(C);
  for (int c = 0; c < C; c++) {
    double invstd = 1.0 / std::sqrt((double)var[c] + eps);
    double db = sg0[c] + sg1[c], dg = (sgx0[c] + sgx1[c]) * invstd;
    dbeta[c] = (float)db;
    dgamma[c] = (float)dg;
    double ac = gamma[c] * invstd;
    av[c] = (float)ac;
    uv[c] = (float)(-ac * dg / M * invstd);   // coefficient of (x - mean): -a/M * dgamma * xhat
    vv[c] = (float)(-ac * db / M);
  }
  rows2(M, C, [&](int r0, int r1) { bnGradApply(x, y, dy, mean, av.data(), uv.data(), vv.data(), dx, C, r0, r1); });
  return nullptr;
}

// copyCols(heap, src, dst, M, srcStride, dstStride, width, srcCol, dstCol)
napi_value CopyCols(napi_env env, napi_callback_info info) {
  Args a(env, info, 9);
  if (!a.ok) return nullptr;
  int M = a.n(3), ss = a.n(4), ds = a.n(5), w = a.n(6), sc = a.n(7), dc = a.n(8);
  float *src = a.f(1, (double)M * ss), *dst = a.f(2, (double)M * ds);
  if (!a.ok || sc + w > ss || dc + w > ds) { if (a.ok) napi_throw_range_error(env, nullptr, "copyCols: columns out of range"); return nullptr; }
  rows2(M, w, [&](int r0, int r1) { copyColsRange(src, dst, ss, ds, w, sc, dc, r0, r1); });
  return nullptr;
}


// ---- SGD (torch.optim.SGD: d = g + wd*w; buf = d on the first step, else momentum*buf + d; w -= lr*buf) ----
// The gradient an SGD pass reads at element i: a float vector (Vec), or (Pair) the exact mean of two ranks' slots,
// fround((double(a) + double(b)) * 0.5): the float64 sum of two floats then an exact halving, which is the division's
// result bit for bit (the coordinator's mean), formed in the update's own pass (no staging buffer).
struct Vec { const float* g; float operator()(size_t i) const { return g[i]; } };
struct Pair {
  const float* a; const float* b;
  float operator()(size_t i) const { return float((double(a[i]) + double(b[i])) * 0.5); }
};

// Each product and sum is rounded to float32 in the order tfjs's kernels use, and never contracted into an
// FMA, so the result is bitwise that of the tensor path.
template <class G>
__attribute__((optimize("fp-contract=off")))
void sgdRangeOf(float* w, float* b, G g, size_t n, float mom, float wd, float lr, bool started, bool nesterov) {
  if (b && nesterov) {
    // torch.optim.SGD(nesterov=True): the step is d + momentum*buf with buf already updated.
    for (size_t i = 0; i < n; i++) {
      float d = g(i) + w[i] * wd;
      float buf = started ? b[i] * mom + d : d;
      b[i] = buf;
      w[i] = w[i] - (d + buf * mom) * lr;
    }
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float d = g(i) + w[i] * wd;
    if (b) {
      if (started) d = b[i] * mom + d;
      b[i] = d;
    }
    w[i] = w[i] - d * lr;
  }
}

void sgdRange(float* w, float* b, const float* g, size_t n, float mom, float wd, float lr, bool started, bool nesterov) {
  sgdRangeOf(w, b, Vec{g}, n, mom, wd, lr, started, nesterov);
}

// A typed array argument of the wanted element type: its data and element count.
bool typedArg(napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* count) {
  napi_typedarray_type t; napi_value ab; size_t off;
  return napi_get_typedarray_info(env, v, &t, count, data, &ab, &off) == napi_ok && t == want;
}

// SGD operands: weights W and momentum B (byte offsets, -1: none) of S floats inside a heap of len bytes; their
// gradients at G inside ng floats.
bool sgdInBounds(const double* W, const double* B, const double* S, const double* G, size_t nw, size_t len, size_t ng) {
  for (size_t i = 0; i < nw; i++) {
    if (W[i] < 0 || W[i] + 4 * S[i] > len || (B[i] >= 0 && B[i] + 4 * S[i] > len) || G[i] < 0 || G[i] + S[i] > ng) return false;
  }
  return true;
}

// run(i0, i1) over tensors [0, nw), split between the two threads by element count (sizes S) where there are two.
template <class F>
void splitBySize(size_t nw, const double* S, F run) {
  if (numThreads() == 1 || nw < 2) { run(size_t(0), nw); return; }
  double total = 0; for (size_t i = 0; i < nw; i++) total += S[i];
  size_t split = 0; double acc = 0;
  while (split < nw && acc + S[split] <= total / 2) acc += S[split++];
  if (split == 0) split = 1;
  std::thread t(run, size_t(0), split);
  run(split, nw);
  t.join();
}

// sgd(heap, wOffsets: Float64Array, bOffsets: Float64Array (-1: none), sizes: Float64Array,
//     grads: Float32Array, gOffsets: Float64Array, momentum, weightDecay, lr, started[, nesterov])
napi_value Sgd(napi_env env, napi_callback_info info) {
  size_t argc = 11; napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  auto typed = [&](napi_value v, napi_typedarray_type want, void** data, size_t* count) { return typedArg(env, v, want, data, count); };
  void *wo, *bo, *sz, *gr, *go; size_t nw, nb, ns, ng, ngo;
  if ((argc != 10 && argc != 11) || !heapPtr(env, argv[0], &heap, &len) || !typed(argv[1], napi_float64_array, &wo, &nw) ||
      !typed(argv[2], napi_float64_array, &bo, &nb) || !typed(argv[3], napi_float64_array, &sz, &ns) ||
      !typed(argv[4], napi_float32_array, &gr, &ng) || !typed(argv[5], napi_float64_array, &go, &ngo) ||
      nb != nw || ns != nw || ngo != nw) {
    napi_throw_type_error(env, nullptr, "sgd(heap, wOffsets, bOffsets, sizes, grads, gOffsets, momentum, weightDecay, lr, started[, nesterov])");
    return nullptr;
  }
  const double *W = static_cast<double*>(wo), *B = static_cast<double*>(bo), *S = static_cast<double*>(sz), *G = static_cast<double*>(go);
  const float* grads = static_cast<float*>(gr);
  if (!sgdInBounds(W, B, S, G, nw, len, ng)) { napi_throw_range_error(env, nullptr, "sgd: out of bounds"); return nullptr; }
  float mom = (float)num(env, argv[6]), wd = (float)num(env, argv[7]), lr = (float)num(env, argv[8]);
  bool started = num(env, argv[9]) != 0;
  bool nesterov = argc == 11 && num(env, argv[10]) != 0;
  // Split the tensors between the threads by element count.
  splitBySize(nw, S, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      float* w = reinterpret_cast<float*>(heap + (size_t)W[i]);
      float* b = B[i] >= 0 ? reinterpret_cast<float*>(heap + (size_t)B[i]) : nullptr;
      sgdRange(w, b, grads + (size_t)G[i], (size_t)S[i], mom, wd, lr, started, nesterov);
    }
  });
  return nullptr;
}

// sgdMean(heap, wOffsets, bOffsets, sizes, slots: Float32Array[], gOffsets, momentum, weightDecay, lr, started, nesterov)
// The same step on the exact mean over R ranks' gradients, read where the ranks wrote them (the shared-memory
// plane's slots, coordinator ShmPlane.gather): g = fround(((s_0 + s_1) + ... + s_{R-1}) / R), the sum in float64 in
// rank order (the coordinator's reduction, bit for bit), then sgdRange. One pass over R slots instead of averaging
// into every slot and reading the mean back.
__attribute__((optimize("fp-contract=off")))
void sgdMeanRange(float* w, float* b, const float* const* src, int R, size_t n, float mom, float wd, float lr, bool started, bool nesterov) {
  // Two ranks (the common case): the mean inside the update's pass (Pair); 13.4 M values on one core 11.2 -> 6.2 ms.
  if (R == 2) { sgdRangeOf(w, b, Pair{src[0], src[1]}, n, mom, wd, lr, started, nesterov); return; }
  constexpr size_t B = 1024;
  alignas(64) double acc[B];
  alignas(64) float g[B];
  for (size_t i0 = 0; i0 < n; i0 += B) {
    const size_t m = n - i0 < B ? n - i0 : B;
    for (size_t i = 0; i < m; i++) acc[i] = src[0][i0 + i];
    for (int r = 1; r < R; r++) for (size_t i = 0; i < m; i++) acc[i] += src[r][i0 + i];
    // A power-of-two R scales exactly, so a multiply gives the division's bits; a divide per element made this pass
    // compute-bound (R = 2 before Pair: 11.2 ms for 13.4 M values on one core, against sgd's 6.2).
    if ((R & (R - 1)) == 0) {
      const double inv = 1.0 / R;
      for (size_t i = 0; i < m; i++) g[i] = float(acc[i] * inv);
    } else {
      for (size_t i = 0; i < m; i++) g[i] = float(acc[i] / R);
    }
    sgdRange(w + i0, b ? b + i0 : nullptr, g, m, mom, wd, lr, started, nesterov);
  }
}

napi_value SgdMean(napi_env env, napi_callback_info info) {
  size_t argc = 11; napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  auto typed = [&](napi_value v, napi_typedarray_type want, void** data, size_t* count) { return typedArg(env, v, want, data, count); };
  const char* usage = "sgdMean(heap, wOffsets, bOffsets, sizes, slots: Float32Array[], gOffsets, momentum, weightDecay, lr, started, nesterov)";
  void *wo, *bo, *sz, *go; size_t nw, nb, ns, ngo;
  bool isArray = false;
  if (argc != 11 || !heapPtr(env, argv[0], &heap, &len) || !typed(argv[1], napi_float64_array, &wo, &nw) ||
      !typed(argv[2], napi_float64_array, &bo, &nb) || !typed(argv[3], napi_float64_array, &sz, &ns) ||
      napi_is_array(env, argv[4], &isArray) != napi_ok || !isArray || !typed(argv[5], napi_float64_array, &go, &ngo) ||
      nb != nw || ns != nw || ngo != nw) {
    napi_throw_type_error(env, nullptr, usage);
    return nullptr;
  }
  uint32_t R = 0;
  napi_get_array_length(env, argv[4], &R);
  if (R < 1 || R > 64) { napi_throw_range_error(env, nullptr, "sgdMean: 1..64 slots"); return nullptr; }
  const float* src[64]; size_t ng = 0;
  for (uint32_t r = 0; r < R; r++) {
    napi_value v; void* d; size_t c;
    if (napi_get_element(env, argv[4], r, &v) != napi_ok || !typed(v, napi_float32_array, &d, &c) || (r > 0 && c != ng)) {
      napi_throw_type_error(env, nullptr, "sgdMean: slots must be Float32Arrays of one length");
      return nullptr;
    }
    src[r] = static_cast<const float*>(d);
    ng = c;
  }
  const double *W = static_cast<double*>(wo), *B = static_cast<double*>(bo), *S = static_cast<double*>(sz), *G = static_cast<double*>(go);
  if (!sgdInBounds(W, B, S, G, nw, len, ng)) { napi_throw_range_error(env, nullptr, "sgdMean: out of bounds"); return nullptr; }
  float mom = (float)num(env, argv[6]), wd = (float)num(env, argv[7]), lr = (float)num(env, argv[8]);
  bool started = num(env, argv[9]) != 0, nesterov = num(env, argv[10]) != 0;
  splitBySize(nw, S, [&](size_t i0, size_t i1) {
    const float* at[64];
    for (size_t i = i0; i < i1; i++) {
      for (uint32_t r = 0; r < R; r++) at[r] = src[r] + (size_t)G[i];
      float* w = reinterpret_cast<float*>(heap + (size_t)W[i]);
      float* b = B[i] >= 0 ? reinterpret_cast<float*>(heap + (size_t)B[i]) : nullptr;
      sgdMeanRange(w, b, at, (int)R, (size_t)S[i], mom, wd, lr, started, nesterov);
    }
  });
  return nullptr;
}

// ---- EMA of the weights: t = decay*t + (1-decay)*s, in place (torch.optim.swa_utils.AveragedModel's step) ----
// Rounded as the tensor path (tf.add(tf.mul(t, decay), tf.mul(s, 1 - decay)) in float32), no FMA, so both paths
// hold the same bits: one pass over the heap instead of three kernels and two temporaries per tensor.
__attribute__((optimize("fp-contract=off")))
void emaRange(float* t, const float* s, size_t n, float keep, float take) {
  for (size_t i = 0; i < n; i++) t[i] = t[i] * keep + s[i] * take;
}

// ema(heap, tOffsets: Float64Array, sOffsets: Float64Array, sizes: Float64Array, keep, take)
napi_value Ema(napi_env env, napi_callback_info info) {
  size_t argc = 6; napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  uint8_t* heap; size_t len;
  auto f64 = [&](napi_value v, void** data, size_t* count) { return typedArg(env, v, napi_float64_array, data, count); };
  void *to, *so, *sz; size_t nt, ns, nz;
  if (argc != 6 || !heapPtr(env, argv[0], &heap, &len) || !f64(argv[1], &to, &nt) || !f64(argv[2], &so, &ns) ||
      !f64(argv[3], &sz, &nz) || ns != nt || nz != nt) {
    napi_throw_type_error(env, nullptr, "ema(heap, tOffsets, sOffsets, sizes, keep, take)");
    return nullptr;
  }
  const double *T = static_cast<double*>(to), *S = static_cast<double*>(so), *Z = static_cast<double*>(sz);
  for (size_t i = 0; i < nt; i++) {
    if (T[i] < 0 || S[i] < 0 || T[i] + 4 * Z[i] > len || S[i] + 4 * Z[i] > len) {
      napi_throw_range_error(env, nullptr, "ema: out of bounds"); return nullptr;
    }
  }
  float keep = (float)num(env, argv[4]), take = (float)num(env, argv[5]);
  for (size_t i = 0; i < nt; i++) {
    emaRange(reinterpret_cast<float*>(heap + (size_t)T[i]), reinterpret_cast<const float*>(heap + (size_t)S[i]), (size_t)Z[i], keep, take);
  }
  return nullptr;
}

// As napi_set_named_property would make them: writable, enumerable, configurable.
constexpr napi_property_attributes kPlain =
    static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable);

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor fns[] = {
      {"sgemm", nullptr, Sgemm, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"maxPoolGrad", nullptr, MaxPoolGrad, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"im2col", nullptr, Im2colF, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"col2im", nullptr, Col2imF, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"bnStats", nullptr, BnStats, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"bnReluForward", nullptr, BnReluForward, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"bnReluBackward", nullptr, BnReluBackward, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"copyCols", nullptr, CopyCols, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"sgd", nullptr, Sgd, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"sgdMean", nullptr, SgdMean, nullptr, nullptr, nullptr, kPlain, nullptr},
      {"ema", nullptr, Ema, nullptr, nullptr, nullptr, kPlain, nullptr},
  };
  napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

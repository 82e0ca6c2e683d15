// The crop + bilinear resize + flip + normalise loop of src/augment.ts (Resampler.render), compiled: the JPEG
// training path spends ~0.8 ms per 224 crop in the JavaScript loop, this takes a fraction of that. It computes
// in double and rounds to float32 exactly where the JavaScript does (column weights are stored as float32,
// everything else is a double, the output a float32), with no fused multiply-adds, so its output is
// bit-identical to the JavaScript loop (src/native-render.test.ts checks this). Built at install by
// tools/build-native.mjs; without it src/augment.ts runs the JavaScript loop.
//   render(src u8, W, H, C, x, y, w, h, flip, scale f32[3], bias f32[3], out f32, offset, srcLeft, srcTop,
//          srcWidth, size)
#include <node_api.h>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

bool typed(napi_env env, napi_value v, void** data, size_t* length) {
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  return napi_get_typedarray_info(env, v, &type, length, data, &ab, &offset) == napi_ok;
}

double num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

napi_value fail(napi_env env, const char* msg) {
  napi_throw_range_error(env, "ERR_NATIVE_RENDER", msg);
  return nullptr;
}

struct Tables {
  std::vector<int32_t> xa, xb;
  std::vector<float> fx;
  std::vector<double> rows, sc, bi;  // two cached horizontal rows; scale and bias expanded to S*3
};

// Source row of output row oy (y0, y1 and the weight of y1), as the JavaScript computes it.
__attribute__((optimize("fp-contract=off")))
inline int rowOf(int oy, double by, double syScale, int H, int* y1, double* fy) {
  double sy = by + (oy + 0.5) * syScale - 0.5;
  if (sy < 0) sy = 0;
  else if (sy > H - 1) sy = H - 1;
  const int y0 = (int)std::floor(sy);
  *y1 = y0 + 1 < H ? y0 + 1 : y0;
  *fy = sy - y0;
  return y0;
}

// Returns an error message, or nullptr after writing the S*S*3 floats. Every tap is checked against src's
// length first: the JavaScript loop would read undefined (NaN) there, here it would read foreign memory.
__attribute__((optimize("fp-contract=off")))
const char* renderImpl(const uint8_t* src, size_t srcN, int W, int H, int C, double bx, double by, double bw, double bh,
                       bool flip, const float* scale, const float* bias, float* out, int srcLeft, int srcTop,
                       int srcWidth, int S, Tables& t) {
  t.xa.resize(S);
  t.xb.resize(S);
  t.fx.resize(S);
  int32_t* xa = t.xa.data();
  int32_t* xb = t.xb.data();
  float* fx = t.fx.data();
  const double sxScale = bw / S;
  for (int ox = 0; ox < S; ox++) {
    const int col = flip ? S - 1 - ox : ox;
    double sx = bx + (col + 0.5) * sxScale - 0.5;
    if (sx < 0) sx = 0;
    else if (sx > W - 1) sx = W - 1;
    const int x0 = (int)std::floor(sx);
    const int x1 = x0 + 1 < W ? x0 + 1 : x0;
    xa[ox] = (x0 - srcLeft) * C;
    xb[ox] = (x1 - srcLeft) * C;
    fx[ox] = (float)(sx - x0);
    if (x0 < srcLeft || x1 >= srcLeft + srcWidth) return "render: the crop's columns fall outside src";
  }
  const double syScale = bh / S;
  const long rowStride = (long)srcWidth * C;
  {
    int y1;
    double fy;
    const int first = rowOf(0, by, syScale, H, &y1, &fy);
    rowOf(S - 1, by, syScale, H, &y1, &fy);  // rows grow with oy: the last row has the largest y1
    if (first < srcTop || (size_t)(y1 - srcTop + 1) * (size_t)rowStride > srcN) return "render: the crop's rows fall outside src";
  }
  // Separable, as the JavaScript's arithmetic allows: the horizontal lerp of a source row is the same double
  // whichever output row uses it, so each source row is interpolated once into a cached double row (two
  // slots: consecutive output rows share rows), then the vertical lerp + normalise is a contiguous loop over
  // S*3 values that the compiler vectorises.
  const int n3 = S * 3;
  t.rows.resize((size_t)n3 * 2);
  t.sc.resize(n3);
  t.bi.resize(n3);
  double* sc = t.sc.data();
  double* bi = t.bi.data();
  for (int i = 0; i < n3; i += 3) {
    sc[i] = scale[0]; sc[i + 1] = scale[1]; sc[i + 2] = scale[2];
    bi[i] = bias[0]; bi[i + 1] = bias[1]; bi[i + 2] = bias[2];
  }
  double* slot[2] = {t.rows.data(), t.rows.data() + n3};
  int slotY[2] = {-1, -1};
  auto hrow = [&](int y, double* dst) {
    const uint8_t* r = src + (long)(y - srcTop) * rowStride;
    if (C >= 3) {
      for (int ox = 0; ox < S; ox++) {
        const uint8_t* p0 = r + xa[ox];
        const uint8_t* p1 = r + xb[ox];
        const double f = fx[ox];
        dst[3 * ox] = p0[0] + (double)(p1[0] - p0[0]) * f;
        dst[3 * ox + 1] = p0[1] + (double)(p1[1] - p0[1]) * f;
        dst[3 * ox + 2] = p0[2] + (double)(p1[2] - p0[2]) * f;
      }
    } else {
      for (int ox = 0; ox < S; ox++) {
        const double v = r[xa[ox]] + (double)(r[xb[ox]] - r[xa[ox]]) * (double)fx[ox];
        dst[3 * ox] = v; dst[3 * ox + 1] = v; dst[3 * ox + 2] = v;
      }
    }
  };
  auto row = [&](int y) -> const double* {
    if (slotY[0] == y) return slot[0];
    if (slotY[1] == y) return slot[1];
    return nullptr;
  };
  float* o = out;
  for (int oy = 0; oy < S; oy++, o += n3) {
    int y1;
    double fy;
    const int y0 = rowOf(oy, by, syScale, H, &y1, &fy);
    // Evict the slot holding neither y0 nor y1 (rows only move down), then fill what is missing.
    for (int y : {y0, y1}) {
      if (row(y)) continue;
      const int victim = (slotY[0] != y0 && slotY[0] != y1) ? 0 : 1;
      hrow(y, slot[victim]);
      slotY[victim] = y;
    }
    const double* a = row(y0);
    const double* b = row(y1);
    for (int i = 0; i < n3; i++) o[i] = (float)((a[i] + (b[i] - a[i]) * fy) * sc[i] + bi[i]);
  }
  return nullptr;
}

napi_value Render(napi_env env, napi_callback_info info) {
  size_t argc = 17;
  napi_value a[17];
  napi_get_cb_info(env, info, &argc, a, nullptr, nullptr);
  if (argc != 17) return fail(env, "render: expected 17 arguments");
  void *srcP, *scaleP, *biasP, *outP;
  size_t srcN, scaleN, biasN, outN;
  if (!typed(env, a[0], &srcP, &srcN) || !typed(env, a[9], &scaleP, &scaleN) || !typed(env, a[10], &biasP, &biasN) ||
      !typed(env, a[11], &outP, &outN))
    return fail(env, "render: src, scale, bias and out must be typed arrays");
  const int W = (int)num(env, a[1]), H = (int)num(env, a[2]), C = (int)num(env, a[3]);
  const double bx = num(env, a[4]), by = num(env, a[5]), bw = num(env, a[6]), bh = num(env, a[7]);
  bool flip = false;
  napi_get_value_bool(env, a[8], &flip);
  const long offset = (long)num(env, a[12]);
  const int srcLeft = (int)num(env, a[13]), srcTop = (int)num(env, a[14]), srcWidth = (int)num(env, a[15]);
  const int S = (int)num(env, a[16]);
  if (S < 1 || C < 1 || C > 4 || W < 1 || H < 1 || scaleN < 3 || biasN < 3) return fail(env, "render: bad sizes");
  if (offset < 0 || (size_t)offset + (size_t)S * S * 3 > outN) return fail(env, "render: out too small");
  static thread_local Tables tables;
  const char* err = renderImpl(static_cast<const uint8_t*>(srcP), srcN, W, H, C, bx, by, bw, bh, flip, static_cast<const float*>(scaleP),
             static_cast<const float*>(biasP), static_cast<float*>(outP) + offset, srcLeft, srcTop, srcWidth, S, tables);
  return err ? fail(env, err) : nullptr;
}

// As napi_set_named_property would make them: writable, enumerable, configurable.
constexpr napi_property_attributes kPlain =
    static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable);

napi_value Init(napi_env env, napi_value exports) {
  const napi_property_descriptor fn = {"render", nullptr, Render, nullptr, nullptr, nullptr, kPlain, nullptr};
  napi_define_properties(env, exports, 1, &fn);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

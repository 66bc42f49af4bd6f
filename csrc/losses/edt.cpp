// CPU exact EDT (see edt.h). Work is split over lines; strided passes gather a tile of kTile
// neighbouring lines so each cache line read serves kTile lines. All index arithmetic is int64.
#include "losses/edt.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/errors.h"
#include "common/parallel.h"

namespace medseg {
namespace losses {

namespace {

constexpr int64_t kTile = 16;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Lower envelope of the parabolas y = (x - q h)^2 + f[q] over the sites with finite f, evaluated at
// x = p h. v and z need n and n + 1 entries. Intersections use differences, not f + x^2, so large
// distances keep their precision.
void envelope_line(const double* f, double* d, int64_t n, double h, int64_t* v, double* z) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    const double fq = f[q];
    if (!(fq < kInf)) continue;
    double s = -kInf;
    while (k >= 0) {
      const int64_t r = v[k];
      s = 0.5 * ((fq - f[r]) / (static_cast<double>(q - r) * h) + static_cast<double>(q + r) * h);
      if (s <= z[k]) {
        --k;
      } else {
        break;
      }
    }
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -kInf;
    } else {
      ++k;
      v[k] = q;
      z[k] = s;
    }
    z[k + 1] = kInf;
  }
  if (k < 0) {
    std::fill(d, d + n, kInf);
    return;
  }
  int64_t j = 0;
  for (int64_t p = 0; p < n; ++p) {
    const double x = static_cast<double>(p) * h;
    while (z[j + 1] < x) ++j;
    const double dx = x - static_cast<double>(v[j]) * h;
    d[p] = dx * dx + f[v[j]];
  }
}

// Small transforms run on the calling thread: an OpenMP region costs more than it saves there, and
// much more on an oversubscribed machine (threads spin at the barrier while others hold the cores).
constexpr int64_t kSerialBelow = int64_t(1) << 16;  // voxels

template <typename F>
void run_items(int64_t items, int64_t voxels, F&& f) {
  if (voxels < kSerialBelow) {
    for (int64_t i = 0; i < items; ++i) f(i);
  } else {
    parallel_for(items, f);
  }
}

template <typename T>
inline T finish(double sq, bool final_pass, bool squared) {
  return static_cast<T>(final_pass && !squared ? std::sqrt(sq) : sq);
}

// Pass 1: along the last (contiguous) axis, squared distance to the nearest background voxel.
template <typename T>
void scan_last_axis(const uint8_t* mask, T* out, int64_t lines, int64_t n, double h, bool final_pass,
                    bool squared, bool invert) {
  const int64_t chunk = std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1));
  const int64_t items = (lines + chunk - 1) / chunk;
  run_items(items, lines * n, [&](int64_t it) {
    thread_local std::vector<int64_t> before;
    before.resize(static_cast<size_t>(n));
    const int64_t l0 = it * chunk, l1 = std::min(lines, l0 + chunk);
    const int64_t none = std::numeric_limits<int64_t>::max();
    for (int64_t l = l0; l < l1; ++l) {
      const uint8_t* m = mask + l * n;
      T* o = out + l * n;
      // forward: steps back to the last site (background, or foreground when inverted) at or before i
      int64_t last = -1;
      for (int64_t i = 0; i < n; ++i) {
        if ((m[i] == 0) != invert) last = i;
        before[static_cast<size_t>(i)] = last < 0 ? none : i - last;
      }
      if (last < 0) {  // no site on this line
        std::fill(o, o + n, static_cast<T>(kInf));
        continue;
      }
      int64_t next = -1;
      for (int64_t i = n - 1; i >= 0; --i) {
        if ((m[i] == 0) != invert) next = i;
        int64_t steps = before[static_cast<size_t>(i)];
        if (next >= 0) steps = std::min(steps, next - i);
        const double dist = static_cast<double>(steps) * h;
        o[i] = finish<T>(dist * dist, final_pass, squared);
      }
    }
  });
}

// Pass k > 1: along an axis of length n and stride `inner` (elements), in place.
template <typename T>
void envelope_axis(T* out, int64_t outer, int64_t n, int64_t inner, double h, bool final_pass, bool squared) {
  const int64_t tiles = (inner + kTile - 1) / kTile;
  const int64_t items = outer * tiles;
  run_items(items, outer * n * inner, [&](int64_t it) {
    thread_local std::vector<double> fbuf, dbuf, zbuf;
    thread_local std::vector<int64_t> vbuf;
    fbuf.resize(static_cast<size_t>(kTile * n));
    dbuf.resize(static_cast<size_t>(n));
    zbuf.resize(static_cast<size_t>(n + 1));
    vbuf.resize(static_cast<size_t>(n));
    const int64_t o = it / tiles;
    const int64_t t0 = (it % tiles) * kTile;
    const int64_t width = std::min(kTile, inner - t0);
    T* base = out + o * n * inner + t0;
    for (int64_t i = 0; i < n; ++i) {
      const T* row = base + i * inner;
      for (int64_t t = 0; t < width; ++t) fbuf[static_cast<size_t>(t * n + i)] = static_cast<double>(row[t]);
    }
    for (int64_t t = 0; t < width; ++t) {
      double* f = fbuf.data() + t * n;
      // lines with no finite site, or with every site at 0, are already their own transform
      double lo = kInf, hi = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, f[i]);
        hi = std::max(hi, f[i]);
      }
      if (hi == 0.0 || lo == kInf) continue;
      envelope_line(f, dbuf.data(), n, h, vbuf.data(), zbuf.data());
      std::copy(dbuf.begin(), dbuf.begin() + n, f);
    }
    for (int64_t i = 0; i < n; ++i) {
      T* row = base + i * inner;
      for (int64_t t = 0; t < width; ++t)
        row[t] = finish<T>(fbuf[static_cast<size_t>(t * n + i)], final_pass, squared);
    }
  });
}

template <typename T>
void edt_pass(const uint8_t* mask, T* out, const EdtGeometry& g, bool invert, bool squared) {
  const int64_t d0 = g.dims[0], d1 = g.dims[1], d2 = g.dims[2];
  const bool pass1 = d1 > 1, pass0 = d0 > 1;
  scan_last_axis<T>(mask, out, g.volumes * d0 * d1, d2, g.spacing[2], !pass1 && !pass0, squared, invert);
  if (pass1) envelope_axis<T>(out, g.volumes * d0, d1, d2, g.spacing[1], !pass0, squared);
  if (pass0) envelope_axis<T>(out, g.volumes, d0, d1 * d2, g.spacing[0], true, squared);
}

template <typename T>
void run_cpu(const uint8_t* mask, T* out, const EdtGeometry& g) {
  const int64_t vol = g.dims[0] * g.dims[1] * g.dims[2];
  const int64_t total = g.volumes * vol;
  if (total == 0) return;
  if (g.mode == EdtMode::Plain || g.mode == EdtMode::Inverted) {
    edt_pass<T>(mask, out, g, g.mode == EdtMode::Inverted, g.squared);
    return;
  }
  std::vector<T> other(static_cast<size_t>(total));
  edt_pass<T>(mask, out, g, false, false);          // inside: distance to the background
  edt_pass<T>(mask, other.data(), g, true, false);  // outside: distance to the object
  const bool field = g.mode == EdtMode::Field;
  const T offset = static_cast<T>(g.offset);
  const int64_t chunk = 1 << 15;
  const int64_t per_vol = (vol + chunk - 1) / chunk;
  // a uniform volume has no site for one of the two transforms: +inf at every voxel, also the first;
  // read before any chunk overwrites the first voxel
  std::vector<uint8_t> uniform(static_cast<size_t>(g.volumes));
  for (int64_t v = 0; v < g.volumes; ++v)
    uniform[static_cast<size_t>(v)] = std::isinf(static_cast<double>(out[v * vol])) ||
                                      std::isinf(static_cast<double>(other[static_cast<size_t>(v * vol)]));
  run_items(g.volumes * per_vol, total, [&](int64_t it) {
    const int64_t v = it / per_vol;
    const int64_t a = v * vol + (it % per_vol) * chunk, b = std::min(v * vol + vol, a + chunk);
    if (uniform[static_cast<size_t>(v)]) {
      std::fill(out + a, out + b, T(0));
      return;
    }
    for (int64_t i = a; i < b; ++i) {
      const T o = other[static_cast<size_t>(i)];
      out[i] = field ? out[i] + o : (mask[i] ? offset - out[i] : o);
    }
  });
}

}  // namespace

EdtGeometry edt_check(const TensorDesc& mask, const TensorDesc& out, const double* spacing, int n_spacing,
                      bool squared, int mode, double offset) {
  MEDSEG_CHECK(mode >= 0 && mode <= 3, "mode: internal, expected 0..3, got ", mode);
  MEDSEG_CHECK(std::isfinite(offset), "inside_offset: expected a finite number");
  MEDSEG_CHECK(!squared || mode <= 1, "squared: only for the plain and inverted transforms");
  MEDSEG_CHECK(mask.dtype == DType::UInt8, "mask: internal, expected uint8 bytes, got ", dtype_name(mask.dtype));
  MEDSEG_CHECK(out.dtype == DType::Float32 || out.dtype == DType::Float64, "out: expected float32 or float64, got ",
               dtype_name(out.dtype));
  MEDSEG_CHECK(mask.ndim == 4, "mask: internal, expected a (volumes, d0, d1, d2) view, got rank ", mask.ndim);
  MEDSEG_CHECK(out.ndim == 4, "out: internal, expected a (volumes, d0, d1, d2) view, got rank ", out.ndim);
  for (int i = 0; i < 4; ++i)
    MEDSEG_CHECK(mask.shape[i] == out.shape[i], "out: shape differs from mask at axis ", i, " (", out.shape[i],
                 " vs ", mask.shape[i], ")");
  MEDSEG_CHECK(mask.is_contiguous(), "mask: internal, expected a contiguous array");
  MEDSEG_CHECK(out.is_contiguous(), "out: expected a contiguous array");
  MEDSEG_CHECK(n_spacing == 3, "spacing: internal, expected 3 values, got ", n_spacing);
  EdtGeometry g;
  g.volumes = mask.shape[0];
  for (int i = 0; i < 3; ++i) {
    g.dims[i] = mask.shape[i + 1];
    MEDSEG_CHECK(std::isfinite(spacing[i]) && spacing[i] > 0, "spacing: expected finite positive values, got ",
                 spacing[i]);
    g.spacing[i] = spacing[i];
  }
  // every int64 offset we form stays below total elements
  int64_t total = 1;
  for (int i = 0; i < 4; ++i) {
    const int64_t s = mask.shape[i];
    MEDSEG_CHECK(s == 0 || total <= std::numeric_limits<int64_t>::max() / s, "mask: too many elements");
    total *= s;
  }
  g.squared = squared;
  g.mode = static_cast<EdtMode>(mode);
  g.offset = offset;
  if (total > 0) {
    MEDSEG_CHECK(mask.data != nullptr && out.data != nullptr, "mask/out: null data pointer");
  }
  return g;
}

void surface_edges_check(const TensorDesc& mask, const TensorDesc& out, int spatial_dims) {
  MEDSEG_CHECK(spatial_dims >= 1 && spatial_dims <= 3, "spatial_dims: expected 1, 2 or 3, got ", spatial_dims);
  MEDSEG_CHECK(mask.dtype == DType::UInt8 && out.dtype == DType::UInt8, "mask/out: internal, expected uint8");
  MEDSEG_CHECK(mask.ndim == 4 && out.ndim == 4, "mask/out: internal, expected (volumes, d0, d1, d2) views");
  for (int i = 0; i < 4; ++i) MEDSEG_CHECK(mask.shape[i] == out.shape[i], "out: shape differs from mask at axis ", i);
  for (int i = 1; i < 4 - spatial_dims; ++i)
    MEDSEG_CHECK(mask.shape[i] == 1, "mask: internal, padded axis ", i, " must have size 1");
  MEDSEG_CHECK(mask.is_contiguous() && out.is_contiguous(), "mask/out: internal, expected contiguous arrays");
}

void surface_edges_cpu(const TensorDesc& mask, const TensorDesc& out, int spatial_dims) {
  const int64_t V = mask.shape[0], d0 = mask.shape[1], d1 = mask.shape[2], d2 = mask.shape[3];
  const auto* m = static_cast<const uint8_t*>(mask.data);
  auto* o = static_cast<uint8_t*>(out.data);
  const bool use0 = spatial_dims >= 3, use1 = spatial_dims >= 2;
  const int64_t rows = V * d0 * d1;
  if (rows == 0 || d2 == 0) return;
  run_items(rows, rows * d2, [&](int64_t r) {
    const int64_t i1 = r % d1, i0 = (r / d1) % d0;
    const uint8_t* row = m + r * d2;
    uint8_t* orow = o + r * d2;
    const uint8_t* up1 = use1 && i1 > 0 ? row - d2 : nullptr;
    const uint8_t* dn1 = use1 && i1 + 1 < d1 ? row + d2 : nullptr;
    const uint8_t* up0 = use0 && i0 > 0 ? row - d1 * d2 : nullptr;
    const uint8_t* dn0 = use0 && i0 + 1 < d0 ? row + d1 * d2 : nullptr;
    const bool border = (use1 && (!up1 || !dn1)) || (use0 && (!up0 || !dn0));
    for (int64_t j = 0; j < d2; ++j) {
      if (!row[j]) {
        orow[j] = 0;
        continue;
      }
      bool interior = !border && j > 0 && j + 1 < d2 && row[j - 1] && row[j + 1];
      if (interior && use1) interior = up1[j] && dn1[j];
      if (interior && use0) interior = up0[j] && dn0[j];
      orow[j] = interior ? 0 : 1;
    }
  });
}

namespace {

template <typename T>
void cdt_volume(const uint8_t* m, T* o, int64_t d0, int64_t d1, int64_t d2, bool chessboard, bool invert) {
  // neighbours before the voxel in raster order; the backward pass uses their mirror images
  int nb[13][3];
  int count = 0;
  for (int a = -1; a <= 0; ++a)
    for (int b = -1; b <= 1; ++b)
      for (int c = -1; c <= 1; ++c) {
        const bool before = a < 0 || (a == 0 && b < 0) || (a == 0 && b == 0 && c < 0);
        const int nonzero = (a != 0) + (b != 0) + (c != 0);
        if (before && (chessboard || nonzero == 1)) {
          nb[count][0] = a;
          nb[count][1] = b;
          nb[count][2] = c;
          ++count;
        }
      }
  const int64_t vol = d0 * d1 * d2;
  bool any_site = false;
  for (int64_t i = 0; i < vol; ++i) {
    const bool site = (m[i] == 0) != invert;
    any_site = any_site || site;
    o[i] = site ? T(0) : static_cast<T>(kInf);
  }
  if (!any_site) return;
  for (int pass = 0; pass < 2; ++pass) {
    const int sgn = pass == 0 ? 1 : -1;
    for (int64_t s = 0; s < vol; ++s) {
      const int64_t i = pass == 0 ? s : vol - 1 - s;
      if (o[i] == T(0)) continue;
      const int64_t z = i / (d1 * d2), y = (i / d2) % d1, x = i % d2;
      T best = o[i];
      for (int k = 0; k < count; ++k) {
        const int64_t zz = z + sgn * nb[k][0], yy = y + sgn * nb[k][1], xx = x + sgn * nb[k][2];
        if (zz < 0 || zz >= d0 || yy < 0 || yy >= d1 || xx < 0 || xx >= d2) continue;
        const T cand = o[(zz * d1 + yy) * d2 + xx] + T(1);
        if (cand < best) best = cand;
      }
      o[i] = best;
    }
  }
}

}  // namespace

void cdt_cpu(const TensorDesc& mask, const TensorDesc& out, int metric, bool invert) {
  MEDSEG_CHECK(metric == 0 || metric == 1, "distance_metric: internal, expected 0 (taxicab) or 1 (chessboard)");
  MEDSEG_CHECK(mask.dtype == DType::UInt8, "mask: internal, expected uint8 bytes");
  MEDSEG_CHECK(out.dtype == DType::Float32 || out.dtype == DType::Float64, "out: expected float32 or float64");
  MEDSEG_CHECK(mask.ndim == 4 && out.ndim == 4, "mask/out: internal, expected (volumes, d0, d1, d2) views");
  for (int i = 0; i < 4; ++i) MEDSEG_CHECK(mask.shape[i] == out.shape[i], "out: shape differs from mask at axis ", i);
  MEDSEG_CHECK(mask.is_contiguous() && out.is_contiguous(), "mask/out: expected contiguous arrays");
  const int64_t V = mask.shape[0], d0 = mask.shape[1], d1 = mask.shape[2], d2 = mask.shape[3];
  const int64_t vol = d0 * d1 * d2;
  if (V * vol == 0) return;
  const auto* m = static_cast<const uint8_t*>(mask.data);
  run_items(V, V * vol, [&](int64_t v) {
    if (out.dtype == DType::Float32) {
      cdt_volume<float>(m + v * vol, static_cast<float*>(out.data) + v * vol, d0, d1, d2, metric == 1, invert);
    } else {
      cdt_volume<double>(m + v * vol, static_cast<double*>(out.data) + v * vol, d0, d1, d2, metric == 1, invert);
    }
  });
}

void edt_cpu(const TensorDesc& mask, const TensorDesc& out, const EdtGeometry& g) {
  const auto* m = static_cast<const uint8_t*>(mask.data);
  if (out.dtype == DType::Float32) {
    run_cpu<float>(m, static_cast<float*>(out.data), g);
  } else {
    run_cpu<double>(m, static_cast<double*>(out.data), g);
  }
}

}  // namespace losses
}  // namespace medseg

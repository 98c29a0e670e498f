// The softmax head and its summed negative log-likelihood as one call (jrnn/native_head.py):
// for the N rows n of hs (N, H) with labels y_n,
//   o_n = h_n V^T + c,   lse_n = log sum_v exp(o_n,v),   J = sum_n (lse_n - o_n,y_n),
// and, for the backward, dJ/do_n = softmax(o_n) - onehot(y_n) = exp(o_n - lse_n) - onehot(y_n).
// The logits of a tile of rows come from the panel product's micro-kernel (common.h) and are
// used while they are in the cache: the largest, the sum of exp(o - largest), then the row's
// loss and gradient; XLA writes the (N, C) logits and reads them back once per reduction.
//
// As jrnn.heads.softmax_nll: a label outside [0, C) gives NaN (its term and its gradient
// row); a masked row (mask false) gives 0 for both. A row whose logits hold a NaN, or whose
// largest is not finite, follows jax.nn.logsumexp's definition (the shift is then 0) in
// scalar code. J's terms are summed in double, per tile of rows and then the tiles in
// order, so that J does not depend on the number of threads.
#include <cmath>

#include "common.h"

namespace jrnn_native {
namespace {

struct HeadProblem {
  int64_t N, H, C, ncb;
  const float* hs;    // (N, H)
  const float* Vp;    // (ceil(C/32), H, 32): V^T, 32 outputs side by side
  const float* c;     // (C,)
  const int32_t* ys;  // (N,)
  const bool* mask;   // (N,), or null: every row counts
  float* d_o;         // (N, C), or null: the loss alone
};

constexpr int64_t kMinRowsPerThread = 256;  // below it a thread costs more than its share

// The loss term of one row from its logits o (C floats, before c), writing its gradient row
// to d_o unless null; o is overwritten.
float row_term(const HeadProblem& P, float* o, int32_t y, float* d_o) {
  using namespace vec;
  constexpr int L = kVecLanes;
  const int64_t C = P.C, full = C - C % L;
  const bool valid = y >= 0 && y < C;
  Vec top = set1<Vec>(-INFINITY);
  bool nan = false;
  for (int64_t v = 0; v < full; v += L) {
    const Vec x = add(load_lanes<Vec>(o + v, L), load_lanes<Vec>(P.c + v, L));
    store_lanes(o + v, x, L);
    nan |= any_nan(x);
    top = max(top, x);
  }
  float largest = max_lane(top);
  for (int64_t v = full; v < C; ++v) {
    o[v] += P.c[v];
    nan |= o[v] != o[v];
    largest = std::max(largest, o[v]);
  }
  if (nan || !std::isfinite(largest)) {  // jax.nn.logsumexp then shifts by 0
    float s = 0.0f;
    for (int64_t v = 0; v < C; ++v) s += std::exp(o[v]);
    const float lse = std::log(s);
    if (d_o)
      for (int64_t v = 0; v < C; ++v)
        d_o[v] = valid ? std::exp(o[v] - lse) - (v == y ? 1.0f : 0.0f) : NAN;
    return valid ? lse - o[y] : NAN;
  }
  const Vec shift = set1<Vec>(largest);
  Vec sum = set1<Vec>(0.0f);
  for (int64_t v = 0; v < full; v += L) sum = add(sum, vexp(sub(load_lanes<Vec>(o + v, L), shift)));
  float s = sum_lanes(sum);
  for (int64_t v = full; v < C; ++v) s += std::exp(o[v] - largest);
  const float lse = largest + std::log(s);
  if (d_o) {
    if (!valid) {
      std::fill(d_o, d_o + C, NAN);
    } else {
      const Vec l = set1<Vec>(lse);
      for (int64_t v = 0; v < full; v += L)
        store_lanes(d_o + v, vexp(sub(load_lanes<Vec>(o + v, L), l)), L);
      for (int64_t v = full; v < C; ++v) d_o[v] = std::exp(o[v] - lse);
      d_o[y] -= 1.0f;
    }
  }
  return valid ? lse - o[y] : NAN;
}

// J, and d_o if asked: the tiles of kTileRows rows split over the threads.
float softmax_nll(const HeadProblem& P, int64_t threads, const FreshOutputs* fresh) {
  const int64_t ntiles = (P.N + kTileRows - 1) / kTileRows;
  const int64_t ldo = P.ncb * 32;
  std::vector<double> terms(ntiles, 0.0);
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, P.N / kMinRowsPerThread));
  on_block_shares(threads, ntiles, [&](Barrier&, int64_t t0, int64_t t1) {
    std::vector<float> o(kTileRows * ldo);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * kTileRows, rows = std::min<int64_t>(kTileRows, P.N - r0);
      rows_times_panels(P.hs + r0 * P.H, P.H, rows, P.Vp, P.H, 0, P.ncb, o.data(), ldo, ldo,
                        false);
      double sum = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = r0 + r;
        float* d_row = P.d_o ? P.d_o + n * P.C : nullptr;
        if (P.mask && !P.mask[n]) {
          if (d_row) std::fill(d_row, d_row + P.C, 0.0f);
          continue;
        }
        sum += row_term(P, o.data() + r * ldo, P.ys[n], d_row);
      }
      terms[t] = sum;
    }
  }, fresh);
  double J = 0.0;
  for (double t : terms) J += t;
  return (float)J;
}

ffi::Error SoftmaxNll(ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> vp, ffi::Buffer<ffi::F32> c,
                      ffi::Buffer<ffi::S32> ys, ffi::Buffer<ffi::PRED> mask,
                      ffi::ResultBuffer<ffi::F32> J, ffi::ResultBuffer<ffi::F32> d_o,
                      bool has_mask, bool keep, int64_t threads) {
  auto hd = hs.dimensions();
  if (hd.size() != 2) return ffi::Error::InvalidArgument("hs: expected (N, H)");
  HeadProblem P{};
  P.N = hd[0]; P.H = hd[1]; P.C = (int64_t)c.element_count(); P.ncb = (P.C + 31) / 32;
  if (auto e = check_panel(vp, "V", P.ncb, P.H, "H", 32, "ceil(C/32)", "32"); e.failure())
    return e;
  if ((int64_t)ys.element_count() != P.N) return ffi::Error::InvalidArgument("ys: expected (N,)");
  if (has_mask && (int64_t)mask.element_count() != P.N)
    return ffi::Error::InvalidArgument("mask: expected (N,)");
  if (keep && (int64_t)d_o->element_count() != P.N * P.C)
    return ffi::Error::InvalidArgument("d_o: expected (N, C)");
  P.hs = hs.typed_data(); P.Vp = vp.typed_data(); P.c = c.typed_data();
  P.ys = ys.typed_data();
  P.mask = has_mask ? mask.typed_data() : nullptr;
  P.d_o = keep ? d_o->typed_data() : nullptr;
  FreshOutputs fresh;
  if (keep) fresh.add(d_o);
  J->typed_data()[0] = softmax_nll(P, threads, &fresh);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jrnn_native

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnSoftmaxNll, jrnn_native::SoftmaxNll,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // hs (N, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()   // V^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // c (C,)
                                  .Arg<ffi::Buffer<ffi::S32>>()   // ys (N,)
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // mask (N,)
                                  .Ret<ffi::Buffer<ffi::F32>>()   // J ()
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dJ/do (N, C)
                                  .Attr<bool>("has_mask")
                                  .Attr<bool>("keep")
                                  .Attr<int64_t>("threads"));

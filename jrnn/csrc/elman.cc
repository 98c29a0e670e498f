// jrnn's tanh (Elman) cell on the CPU: the forward recurrence and the reverse loop of BPTT,
// each one XLA FFI custom call (jrnn/native.py; built with lstm.cc and gru.cc).
//
// Forward, per step t in processing order (jrnn/cells/elman.py, float32):
//   h_t = tanh(x_t U^T + h_{t-1} W^T + b + b_r),
// both products for one block of 32 hidden units and up to kTileRows rows summed in one tile
// of registers (over U^T and W^T packed as (nkb, K, 32)), then the bias and tanh applied to
// the sums and h_t stored once.
// Reverse, per step in reverse processing order: each thread its own units of
//   dA[t] = (d_hs[t] + dh_next) (1 - h_t^2),
// then, after a barrier, its own units of dh_next = dA[t] W (W packed as (nkb, H, 32)).
// The threads split the batch's rows where each gets enough of them, and never wait for one
// another; else the unit blocks, one barrier per step (common.h's on_recurrence_shares).
#include "sampler.h"

namespace {  // NOLINT

using namespace jrnn_native;  // NOLINT

struct ElmanProblem {
  int64_t T, B, D, H, nkb;
  const float* X;     // (T, B, D)
  const float* Up;    // (nkb, D, 32): U^T's columns, 32 units side by side
  const float* Wp;    // (nkb, H, 32): W^T's
  const float* bias;  // (H,): b + b_r, or null
  const float* h0;    // (B, H)
  float* hs;          // (T, B, H)
  float* hT;          // (B, H)
  bool reverse;
};

// Rows r0 .. r0 + RB - 1 of NB 32-unit blocks from kb (one, or two side by side in a tile of
// few rows: see over_tiles_and_blocks) from x (B, D) and hprev (B, H): both products summed in
// one tile of registers, then the bias and tanh on the sums, and h stored once (as the
// LSTM's block: the gate math in a loop over pairs of rows).
template <int RB, int NB>
inline void elman_block(const ElmanProblem& P, const float* x, const float* hprev,
                        float* hout, int64_t r0, int64_t kb) {
  const int64_t D = P.D, H = P.H, u0 = kb * 32;
  Tile<RB, 4 * NB> acc;
  acc.zero();
  if constexpr (NB == 2) {
    acc.accumulate_pair(x + r0 * D, D, P.Up + kb * D * 32, P.Up + (kb + 1) * D * 32, D);
    acc.accumulate_pair(hprev + r0 * H, H, P.Wp + kb * H * 32, P.Wp + (kb + 1) * H * 32, H);
  } else {
    acc.accumulate(x + r0 * D, D, P.Up + kb * D * 32, D);
    acc.accumulate(hprev + r0 * H, H, P.Wp + kb * H * 32, H);
  }
  __m256 sums[RB][4 * NB];
  acc.parts(sums);
  for (int v = 0; v < 4 * NB && u0 + v * 8 < H; ++v) {
    const int64_t u = u0 + v * 8;
    const int n = (int)std::min<int64_t>(8, H - u);
    const __m256 bias = P.bias ? load_n(P.bias + u, n) : _mm256_setzero_ps();
    over_row_pairs<RB>([&]<class V>(int r) {
      const V z = vec::add(pair<V>(sums[r][v], sums[r + kRowsIn<V> - 1][v]),
                           pair<V>(bias, bias));
      store_rows(hout + (r0 + r) * H + u, H, vtanh(z), n);
    });
  }
}

// One step for the rows [b0, b1) and unit blocks [kb0, kb1): hout's units from x (B, D),
// or, where a is given, each row's own H input projections a[b] (the sampler's), and hprev
// (B, H).
void elman_step(const ElmanProblem& P, const float* x, const float* const* a,
                const float* hprev, float* hout, const Share& sh) {
  const int64_t H = P.H, b0 = sh.b0, b1 = sh.b1;
  if (!a) {
    over_tiles_and_blocks(b1 - b0, sh.kb0, sh.kb1, [&](auto RB, int64_t r0, int64_t kb, auto NB) {
      elman_block<RB, NB>(P, x, hprev, hout, b0 + r0, kb);
    });
    return;
  }
  const int64_t u0 = sh.kb0 * 32, u1 = std::min<int64_t>(sh.kb1 * 32, H);
  for (int64_t b = b0; b < b1; ++b)
    std::memcpy(hout + b * H + u0, a[b] + u0, sizeof(float) * (u1 - u0));
  rows_times_panels(hprev + b0 * H, H, b1 - b0, P.Wp, H, sh.kb0, sh.kb1, hout + b0 * H, H, H, true);
  for (int64_t b = b0; b < b1; ++b)
    over_lanes(u0, u1, [&]<class V>(int64_t u, int n) {
      float* h = hout + b * H + u;
      V z = load_lanes<V>(h, n);
      if (P.bias) z = vec::add(z, load_lanes<V>(P.bias + u, n));
      store_lanes(h, vtanh(z), n);
    });
}

void elman_forward_thread(const ElmanProblem& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, D = P.D, H = P.H, BH = B * H;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? T - 1 - s : s;
    const int64_t tp = P.reverse ? t + 1 : t - 1;
    const float* hprev = s == 0 ? P.h0 : P.hs + tp * BH;
    float* hout = P.hs + t * BH;
    elman_step(P, P.X + t * B * D, nullptr, hprev, hout, sh);
    if (bar.n > 1) bar.wait(sense);
  }
  const int64_t tl = P.reverse ? 0 : T - 1;
  const int64_t u0 = sh.kb0 * 32, u1 = std::min<int64_t>(sh.kb1 * 32, H);
  for (int64_t b = sh.b0; b < sh.b1 && u1 > u0; ++b)
    std::memcpy(P.hT + b * H + u0, P.hs + tl * BH + b * H + u0, sizeof(float) * (u1 - u0));
}

struct ElmanReverse {
  int64_t T, B, H, nkb;
  const float* hs;   // (T, B, H)
  const float* dhs;  // (T, B, H)
  const float* Wb;   // (nkb, H, 32)
  float* dA;         // (T, B, H)
  float* dh;         // (B, H): dh_next, then d h0
  bool reverse;
};

void elman_reverse_thread(const ElmanReverse& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, H = P.H, BH = B * H, b0 = sh.b0, b1 = sh.b1;
  const int64_t u0 = sh.kb0 * 32, u1 = std::min<int64_t>(sh.kb1 * 32, H);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? s : T - 1 - s;  // reverse of the forward's order
    for (int64_t b = b0; b < b1; ++b)
      over_lanes(u0, u1, [&]<class V>(int64_t u, int n) {
        using namespace vec;
        const V one = set1<V>(1.0f);
        const int64_t off = t * BH + b * H + u;
        const V h = load_lanes<V>(P.hs + off, n);
        const V dh = add(load_lanes<V>(P.dhs + off, n), load_lanes<V>(P.dh + b * H + u, n));
        store_lanes(P.dA + off, mul(dh, mul(sub(one, h), add(one, h))), n);
      });
    if (bar.n > 1) bar.wait(sense);
    rows_times_panels(P.dA + t * BH + b0 * H, H, b1 - b0, P.Wb, H, sh.kb0, sh.kb1, P.dh + b0 * H,
                      H, H, false);
    // no barrier: the next step's first phase reads only this thread's units of dh
  }
}

ffi::Error ElmanForward(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> up,
                        ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bias,
                        ffi::Buffer<ffi::F32> h0, ffi::ResultBuffer<ffi::F32> hs,
                        ffi::ResultBuffer<ffi::F32> hT, bool reverse, bool has_bias,
                        int64_t threads) {
  auto d = xs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("xs: expected (T, B, D)");
  auto hd = h0.dimensions();
  if (hd.size() != 2) return ffi::Error::InvalidArgument("h0: expected (B, H)");
  ElmanProblem P{};
  P.T = d[0]; P.B = d[1]; P.D = d[2]; P.H = hd[1]; P.nkb = (P.H + 31) / 32;
  if (auto e = check_packed(up, wp, P.nkb, P.D, P.H, 32, "ceil(H/32)", "32"); e.failure())
    return e;
  P.X = xs.typed_data(); P.Up = up.typed_data(); P.Wp = wp.typed_data();
  P.bias = has_bias ? bias.typed_data() : nullptr;
  P.h0 = h0.typed_data(); P.hs = hs->typed_data(); P.hT = hT->typed_data();
  FreshOutputs fresh;
  fresh.add(hs);
  P.reverse = reverse;
  if (P.T == 0) {
    std::memcpy(P.hT, P.h0, sizeof(float) * P.B * P.H);
    return ffi::Error::Success();
  }
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nkb,
                       [&](Barrier& bar, const Share& sh) {
    elman_forward_thread(P, bar, sh);
  }, &fresh);
  return ffi::Error::Success();
}

ffi::Error ElmanBackward(ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> dhs,
                         ffi::Buffer<ffi::F32> dh_final, ffi::Buffer<ffi::F32> wb,
                         ffi::ResultBuffer<ffi::F32> da, ffi::ResultBuffer<ffi::F32> dh0,
                         bool reverse, int64_t threads) {
  auto d = hs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("hs: expected (T, B, H)");
  ElmanReverse P{};
  P.T = d[0]; P.B = d[1]; P.H = d[2]; P.nkb = (P.H + 31) / 32;
  if ((int64_t)wb.element_count() != P.nkb * P.H * 32)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/32), H, 32)");
  P.hs = hs.typed_data(); P.dhs = dhs.typed_data(); P.Wb = wb.typed_data();
  P.dA = da->typed_data(); P.dh = dh0->typed_data();
  FreshOutputs fresh;
  fresh.add(da);
  P.reverse = reverse;
  std::memcpy(P.dh, dh_final.typed_data(), sizeof(float) * P.B * P.H);
  if (P.T == 0) return ffi::Error::Success();
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nkb,
                       [&](Barrier& bar, const Share& sh) {
    elman_reverse_thread(P, bar, sh);
  }, &fresh);
  return ffi::Error::Success();
}

// The sampler (sampler.h) over this cell's step.
ffi::Error ElmanSample(ffi::Buffer<ffi::F32> proj, ffi::Buffer<ffi::F32> a0,
                       ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bias,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> vp,
                       ffi::Buffer<ffi::F32> c, ffi::Buffer<ffi::F32> noise,
                       ffi::ResultBuffer<ffi::S32> tokens, ffi::ResultBuffer<ffi::F32> hT,
                       bool has_bias, bool greedy, float temperature, int64_t threads) {
  Sampling S{};
  if (auto e = sampling_of(S, 1, proj, a0, h0, vp, c, noise, tokens, hT, greedy, temperature);
      e.failure())
    return e;
  ElmanProblem P{};
  P.T = 1; P.B = S.B; P.H = S.H; P.nkb = (P.H + 31) / 32;
  if (auto e = check_panel(wp, "W", P.nkb, P.H, "H", 32, "ceil(H/32)", "32"); e.failure())
    return e;
  P.Wp = wp.typed_data();
  P.bias = has_bias ? bias.typed_data() : nullptr;
  sample(S, P.nkb, [&](const float* const* a, const float* hprev, float* hout, int64_t,
                       const Share& sh) {
    elman_step(P, nullptr, a, hprev, hout, sh);
  }, threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnElmanSample, ElmanSample,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // table U^T (C, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x0 U^T (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b + b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // V^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c (C,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // noise (T, B, C)
                                  .Ret<ffi::Buffer<ffi::S32>>()  // tokens (T, B)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("greedy")
                                  .Attr<float>("temperature")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnElmanForward, ElmanForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs (T, B, D)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // U^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b + b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("has_bias")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnElmanBackward, ElmanBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_hs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d h_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed (ceil(H/32), H, 32)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dA (T, B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h0
                                  .Attr<bool>("reverse")
                                  .Attr<int64_t>("threads"));

// The step-by-step sampler of jrnn's native cells (lstm.cc, gru.cc, elman.cc): one call
// generates T tokens for B sequences from one recurrent layer and a linear head, each token
// fed back as the next step's input. Per step s:
//   h_s = the cell's own forward step from the input projection a_s[b] = x_s[b] U^T and
//         the previous state (the threads split the rows or the hidden units as in the
//         cell's forward loop),
//   o_s = h_s V^T + c (the head; with the units split, its 32-output blocks too),
//   token_s[b] = argmax_v (o_s[b, v] / temperature + g_s[b, v]),
//   a_{s+1}[b] = P[token_s[b]],
// with the units split, a barrier after h_s and one after o_s, and every thread then takes
// the same argmax of every row (the first index among equal values, NaN above all numbers,
// as jnp.argmax). g is Gumbel noise drawn before the call, which makes the argmax a draw
// from softmax(o_s / temperature) (Gumbel 1954; Maddison, Tarlow & Minka 2014); without noise
// the token is argmax_v o_s[b, v]. Every fed-back input is a row of the embedding table,
// so its projection is a row of P = table U^T (C, G H), computed once by the caller: a step
// reads B rows of P instead of multiplying B inputs by U. a_0 = x_0 U^T is given.
#pragma once

#include "common.h"

namespace jrnn_native {

struct Sampling {
  int64_t T, B, H, C, GH, ncb;
  const float* proj;   // (C, G H): P, the input projection that each token feeds back
  const float* a0;     // (B, G H): the first step's
  const float* h0;     // (B, H)
  const float* Vp;     // (ceil(C/32), H, 32): V^T, 32 outputs side by side
  const float* c;      // (C,)
  const float* noise;  // (T, B, C), or null: the most likely token
  float temperature;
  int32_t* tokens;     // (T, B)
  float* hT;           // (B, H)
};

// The token of one row: the first index v of the largest x_v = o_v / temperature + g_v (o_v
// without noise), NaN above every number. x_v is computed a vector at a time into x (C
// floats), as the scan path computes it; the largest by a vector max, then the first index
// that holds it (or the first NaN) by a scan.
inline int32_t argmax_row(const float* o, const float* g, float temperature, int64_t C,
                          float* x) {
  using namespace vec;
  constexpr int L = kVecLanes;
  over_lanes(0, C, [&]<class V>(int64_t u, int n) {
    const V tau = set1<V>(temperature);
    if (g) store_lanes(x + u, add(div(load_lanes<V>(o + u, n), tau), load_lanes<V>(g + u, n)), n);
    else store_lanes(x + u, load_lanes<V>(o + u, n), n);
  });
  Vec top = set1<Vec>(-INFINITY);
  bool nan = false;
  int64_t v = 0;
  for (; v + L <= C; v += L) {
    const Vec xv = load_lanes<Vec>(x + v, L);
    nan |= any_nan(xv);
    top = max(top, xv);
  }
  float largest = max_lane(top);
  for (; v < C; ++v) {
    nan |= x[v] != x[v];
    if (x[v] > largest) largest = x[v];
  }
  for (v = 0; v < C; ++v)
    if (nan ? x[v] != x[v] : x[v] == largest) break;
  return (int32_t)v;
}

// Reads the arguments every cell's sampler shares, checking their shapes (G gates).
inline ffi::Error sampling_of(Sampling& S, int64_t G, ffi::Buffer<ffi::F32>& proj,
                              ffi::Buffer<ffi::F32>& a0, ffi::Buffer<ffi::F32>& h0,
                              ffi::Buffer<ffi::F32>& vp, ffi::Buffer<ffi::F32>& c,
                              ffi::Buffer<ffi::F32>& noise, ffi::ResultBuffer<ffi::S32>& tokens,
                              ffi::ResultBuffer<ffi::F32>& hT, bool greedy, float temperature) {
  auto pd = proj.dimensions(), ad = a0.dimensions(), hd = h0.dimensions();
  auto kd = tokens->dimensions();
  if (hd.size() != 2) return ffi::Error::InvalidArgument("h0: expected (B, H)");
  if (kd.size() != 2) return ffi::Error::InvalidArgument("tokens: expected (T, B)");
  S.T = kd[0]; S.B = kd[1]; S.H = hd[1]; S.GH = G * S.H;
  if (pd.size() != 2 || pd[1] != S.GH)
    return ffi::Error::InvalidArgument("input projections of the tokens: expected (C, G H)");
  S.C = pd[0]; S.ncb = (S.C + 31) / 32;
  if (ad.size() != 2 || ad[0] != S.B || ad[1] != S.GH || hd[0] != S.B)
    return ffi::Error::InvalidArgument("a0, h0: expected (B, G H), (B, H)");
  if ((int64_t)vp.element_count() != S.ncb * S.H * 32)
    return ffi::Error::InvalidArgument("packed V: expected (ceil(C/32), H, 32)");
  if ((int64_t)c.element_count() != S.C) return ffi::Error::InvalidArgument("c: expected (C,)");
  if (!greedy && (int64_t)noise.element_count() != S.T * S.B * S.C)
    return ffi::Error::InvalidArgument("noise: expected (T, B, C)");
  S.proj = proj.typed_data(); S.a0 = a0.typed_data(); S.h0 = h0.typed_data();
  S.Vp = vp.typed_data(); S.c = c.typed_data();
  S.noise = greedy ? nullptr : noise.typed_data();
  S.temperature = temperature;
  S.tokens = tokens->typed_data(); S.hT = hT->typed_data();
  return ffi::Error::Success();
}

// Runs the sampler: step(a, hprev, hout, s, share) is the cell's step s for a thread's share
// of the rows and unit blocks (of nblocks; a[b] row b's input projection (G H floats),
// hprev and hout (B, H)); a cell with more state than h keeps it itself. The threads split
// the rows where each gets kSamplerMinRows (on_recurrence_shares): each then runs the head
// and the argmax of its own rows, with no barrier. Else they split the units and, in the
// same proportion, the head's output blocks, two barriers a step, and every thread takes
// the argmax of every row.
template <class Step>
void sample(const Sampling& S, int64_t nblocks, const Step& step, int64_t threads) {
  const int64_t B = S.B, C = S.C, H = S.H;
  if (S.T == 0) {
    std::memcpy(S.hT, S.h0, sizeof(float) * B * H);
    return;
  }
  std::vector<float> ring(2 * B * H), logits(B * C);
  on_recurrence_shares(threads, B, kSamplerMinRows, nblocks, [&](Barrier& bar, const Share& sh) {
    int sense = 0;
    const int64_t b0 = sh.b0, b1 = sh.b1;
    const int64_t cb0 = S.ncb * sh.kb0 / nblocks, cb1 = S.ncb * sh.kb1 / nblocks;
    std::vector<const float*> a(B);
    for (int64_t b = b0; b < b1; ++b) a[b] = S.a0 + b * S.GH;
    std::vector<int32_t> token(B);
    std::vector<float> scratch(C);
    const float* hprev = S.h0;
    for (int64_t s = 0; s < S.T; ++s) {
      float* hout = ring.data() + (s & 1) * B * H;
      step(a.data(), hprev, hout, s, sh);
      if (bar.n > 1) bar.wait(sense);
      rows_times_panels(hout + b0 * H, H, b1 - b0, S.Vp, H, cb0, cb1, logits.data() + b0 * C, C,
                        C, false);
      for (int64_t b = 0; b < b1 - b0; ++b)
        for (int64_t v = cb0 * 32; v < std::min<int64_t>(cb1 * 32, C); ++v)
          logits[(b0 + b) * C + v] += S.c[v];
      if (bar.n > 1) bar.wait(sense);
      for (int64_t b = b0; b < b1; ++b) {
        token[b] = argmax_row(logits.data() + b * C, S.noise ? S.noise + (s * B + b) * C : nullptr,
                              S.temperature, C, scratch.data());
        a[b] = S.proj + token[b] * S.GH;
      }
      if (sh.kb0 == 0)  // the rows' only thread, or the first of those splitting the units
        std::memcpy(S.tokens + s * B + b0, token.data() + b0, sizeof(int32_t) * (b1 - b0));
      hprev = hout;
    }
  });
  std::memcpy(S.hT, ring.data() + ((S.T - 1) & 1) * B * H, sizeof(float) * B * H);
}

}  // namespace jrnn_native

// The step-by-step sampler of jrnn's native cells (lstm.cc, gru.cc, elman.cc): one call
// generates T tokens for B sequences from one recurrent layer and a linear head, each token
// fed back as the next step's input. Per step s:
//   h_s = the cell's own forward step from x_s and the previous state (its hidden units
//         split over the threads, as in the cell's forward loop),
//   o_s = h_s V^T + c (the head; its 32-output blocks split over the threads),
//   token_s[b] = argmax_v (o_s[b, v] / temperature + g_s[b, v]),
//   x_{s+1}[b] = table[token_s[b]],
// with a barrier after h_s and one after o_s; every thread then takes the same argmax of
// every row (the first index among equal values, NaN above all numbers, as jnp.argmax). g
// is Gumbel noise drawn before the call, which makes the argmax a draw from
// softmax(o_s / temperature) (Gumbel 1954; Maddison, Tarlow & Minka 2014); without noise
// the token is argmax_v o_s[b, v]. x_0 is given.
#pragma once

#include "common.h"

namespace jrnn_native {

struct Sampling {
  int64_t T, B, D, H, C, ncb;
  const float* table;  // (C, D): the input that each token feeds back
  const float* x0;     // (B, D)
  const float* h0;     // (B, H)
  const float* Vp;     // (ceil(C/32), H, 32): V^T, 32 outputs side by side
  const float* c;      // (C,)
  const float* noise;  // (T, B, C), or null: the most likely token
  float temperature;
  int32_t* tokens;     // (T, B)
  float* hT;           // (B, H)
};

inline int32_t argmax_row(const float* o, const float* g, float temperature, int64_t C) {
  int32_t best = 0;
  float top = g ? o[0] / temperature + g[0] : o[0];
  for (int64_t v = 1; v < C; ++v) {
    const float x = g ? o[v] / temperature + g[v] : o[v];
    if (x > top || (x != x && top == top)) { top = x; best = (int32_t)v; }
  }
  return best;
}

// Reads the arguments every cell's sampler shares, checking their shapes.
inline ffi::Error sampling_of(Sampling& S, ffi::Buffer<ffi::F32>& table,
                              ffi::Buffer<ffi::F32>& x0, ffi::Buffer<ffi::F32>& h0,
                              ffi::Buffer<ffi::F32>& vp, ffi::Buffer<ffi::F32>& c,
                              ffi::Buffer<ffi::F32>& noise, ffi::ResultBuffer<ffi::S32>& tokens,
                              ffi::ResultBuffer<ffi::F32>& hT, bool greedy, float temperature) {
  auto td = table.dimensions(), xd = x0.dimensions(), hd = h0.dimensions();
  auto kd = tokens->dimensions();
  if (td.size() != 2) return ffi::Error::InvalidArgument("table: expected (C, D)");
  if (xd.size() != 2) return ffi::Error::InvalidArgument("x0: expected (B, D)");
  if (hd.size() != 2) return ffi::Error::InvalidArgument("h0: expected (B, H)");
  if (kd.size() != 2) return ffi::Error::InvalidArgument("tokens: expected (T, B)");
  S.T = kd[0]; S.B = kd[1]; S.C = td[0]; S.D = td[1]; S.H = hd[1]; S.ncb = (S.C + 31) / 32;
  if (xd[0] != S.B || xd[1] != S.D || hd[0] != S.B)
    return ffi::Error::InvalidArgument("x0, h0: expected (B, D), (B, H)");
  if ((int64_t)vp.element_count() != S.ncb * S.H * 32)
    return ffi::Error::InvalidArgument("packed V: expected (ceil(C/32), H, 32)");
  if ((int64_t)c.element_count() != S.C) return ffi::Error::InvalidArgument("c: expected (C,)");
  if (!greedy && (int64_t)noise.element_count() != S.T * S.B * S.C)
    return ffi::Error::InvalidArgument("noise: expected (T, B, C)");
  S.table = table.typed_data(); S.x0 = x0.typed_data(); S.h0 = h0.typed_data();
  S.Vp = vp.typed_data(); S.c = c.typed_data();
  S.noise = greedy ? nullptr : noise.typed_data();
  S.temperature = temperature;
  S.tokens = tokens->typed_data(); S.hT = hT->typed_data();
  return ffi::Error::Success();
}

// Runs the sampler: step(x, hprev, hout, s, j0, j1) is the cell's step s for its unit blocks
// [j0, j1) of nblocks (x (B, D), hprev and hout (B, H)); a cell with more state than h
// keeps it itself.
template <class Step>
void sample(const Sampling& S, int64_t nblocks, const Step& step, int64_t threads) {
  const int64_t B = S.B, C = S.C, D = S.D, H = S.H;
  if (S.T == 0) {
    std::memcpy(S.hT, S.h0, sizeof(float) * B * H);
    return;
  }
  std::vector<float> ring(2 * B * H), logits(B * C);
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, nblocks));
  on_threads(n, [&](Barrier& bar, int64_t k) {
    int sense = 0;
    const int64_t j0 = nblocks * k / n, j1 = nblocks * (k + 1) / n;
    const int64_t cb0 = S.ncb * k / n, cb1 = S.ncb * (k + 1) / n;
    std::vector<float> x(B * D);
    std::vector<int32_t> token(B);
    const float* xin = S.x0;
    const float* hprev = S.h0;
    for (int64_t s = 0; s < S.T; ++s) {
      float* hout = ring.data() + (s & 1) * B * H;
      step(xin, hprev, hout, s, j0, j1);
      if (n > 1) bar.wait(sense);
      for (int64_t cb = cb0; cb < cb1; ++cb) {
        const int64_t v0 = cb * 32, width = std::min<int64_t>(32, C - v0);
        float* o = logits.data() + v0;
        all_rows_times_panel(hout, H, B, S.Vp + cb * H * 32, H, o, C, width, false);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t v = 0; v < width; ++v) o[b * C + v] += S.c[v0 + v];
      }
      if (n > 1) bar.wait(sense);
      for (int64_t b = 0; b < B; ++b) {
        token[b] = argmax_row(logits.data() + b * C, S.noise ? S.noise + (s * B + b) * C : nullptr,
                              S.temperature, C);
        std::memcpy(x.data() + b * D, S.table + token[b] * D, sizeof(float) * D);
      }
      if (k == 0) std::memcpy(S.tokens + s * B, token.data(), sizeof(int32_t) * B);
      xin = x.data();
      hprev = hout;
    }
  });
  std::memcpy(S.hT, ring.data() + ((S.T - 1) & 1) * B * H, sizeof(float) * B * H);
}

}  // namespace jrnn_native

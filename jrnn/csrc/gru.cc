// jrnn's GRU on the CPU: the forward recurrence and the reverse loop of BPTT, each one XLA
// FFI custom call (jrnn/native.py; built with lstm.cc by `python -m jrnn.native build`).
//
// Forward, per step t (in processing order), the equations of jrnn/cells/gru.py in float32:
//   A = x_t U^T + b, R = h_{t-1} W^T + b_r, each split into H-blocks (r, z, n);
//   r = sigmoid(A_r + R_r), z = sigmoid(A_z + R_z), n = tanh(A_n + r R_n),
//   h_t = (1 - z) n + z h_{t-1}.
// Both products run in one register-blocked micro-kernel per block of 8 hidden units over U
// and W packed as (nb, K, 3, 8) (the three gates' 8 columns side by side), into four
// accumulators per row: r and z take both products, n keeps A_n and R_n apart. The units
// are split over the threads as in lstm.cc, one barrier per step.
//
// Reverse, per step in reverse processing order, each thread first its own units (the
// cell's step_vjp):
//   dh = d_hs[t] + dh_next, da_n = dh (1 - z)(1 - n^2),
//   dz_r = da_n R_n r (1 - r), dz_z = dh (h_{t-1} - n) z (1 - z),
//   dA[t] = [dz_r | dz_z | da_n], dR[t] = [dz_r | dz_z | da_n r], dh_next = dh z;
// then, after a barrier, its own units of dh_next += dR[t] W (W packed as (nkb, 3H, 32)).
#include "sampler.h"

namespace {  // NOLINT

using namespace jrnn_native;  // NOLINT

struct GruProblem {
  int64_t T, B, D, H, nb;
  const float* X;      // (T, B, D)
  const float* Up;     // (nb, D, 3, 8)
  const float* Wp;     // (nb, H, 3, 8)
  const float* b;      // (3H,) or null
  const float* br;     // (3H,) or null
  const float* h0;     // (B, H)
  float* hs;           // (T, B, H)
  float* saved[4];     // r, z, n, R_n: (T, B, H) each, or null
  float* hT;           // (B, H)
  bool reverse;
};

inline __m256 bias_at(const float* v, int64_t i, int n) {
  return v ? load_n(v + i, n) : _mm256_setzero_ps();
}

// Rows r0 .. r0 + RB - 1 of the 8-unit block jb at step t: both products, then the gates.
// x: the step's inputs (B, D).
template <int RB>
inline void gru_block(const GruProblem& P, int64_t t, const float* x, const float* hprev,
                      float* hout, int64_t r0, int64_t jb) {
  const int64_t H = P.H, D = P.D;
  // r, z (both products), A_n, R_n for three rows, as named registers (see lstm.cc)
  __m256 r0a = _mm256_setzero_ps(), z0a = r0a, an0 = r0a, rn0 = r0a;
  __m256 r1a = r0a, z1a = r0a, an1 = r0a, rn1 = r0a;
  __m256 r2a = r0a, z2a = r0a, an2 = r0a, rn2 = r0a;
#define JRNN_GRU_PANEL_LOOP(rows, ld, panel, K, N0, N1, N2)                          \
  {                                                                                  \
    const float* p0 = (rows);                                                        \
    const float* p1 = RB > 1 ? p0 + (ld) : p0;                                       \
    const float* p2 = RB > 2 ? p0 + 2 * (ld) : p0;                                   \
    const float* pw = (panel);                                                       \
    for (int64_t k = 0; k < (K); ++k) {                                              \
      const __m256 w0 = _mm256_loadu_ps(pw + k * 24);                                \
      const __m256 w1 = _mm256_loadu_ps(pw + k * 24 + 8);                            \
      const __m256 w2 = _mm256_loadu_ps(pw + k * 24 + 16);                           \
      const __m256 x0 = _mm256_broadcast_ss(p0 + k);                                 \
      r0a = _mm256_fmadd_ps(x0, w0, r0a); z0a = _mm256_fmadd_ps(x0, w1, z0a);        \
      N0 = _mm256_fmadd_ps(x0, w2, N0);                                              \
      if (RB > 1) {                                                                  \
        const __m256 x1 = _mm256_broadcast_ss(p1 + k);                               \
        r1a = _mm256_fmadd_ps(x1, w0, r1a); z1a = _mm256_fmadd_ps(x1, w1, z1a);      \
        N1 = _mm256_fmadd_ps(x1, w2, N1);                                            \
      }                                                                              \
      if (RB > 2) {                                                                  \
        const __m256 x2 = _mm256_broadcast_ss(p2 + k);                               \
        r2a = _mm256_fmadd_ps(x2, w0, r2a); z2a = _mm256_fmadd_ps(x2, w1, z2a);      \
        N2 = _mm256_fmadd_ps(x2, w2, N2);                                            \
      }                                                                              \
    }                                                                                \
  }
  JRNN_GRU_PANEL_LOOP(x + r0 * D, D, P.Up + jb * D * 24, D, an0, an1, an2)
  JRNN_GRU_PANEL_LOOP(hprev + r0 * H, H, P.Wp + jb * H * 24, H, rn0, rn1, rn2)
#undef JRNN_GRU_PANEL_LOOP
  const __m256 acc[3][4] = {{r0a, z0a, an0, rn0}, {r1a, z1a, an1, rn1}, {r2a, z2a, an2, rn2}};
  const int64_t u0 = jb * 8;
  const int n = (int)std::min<int64_t>(8, H - u0);
  const __m256 b_r = _mm256_add_ps(bias_at(P.b, u0, n), bias_at(P.br, u0, n));
  const __m256 b_z = _mm256_add_ps(bias_at(P.b, H + u0, n), bias_at(P.br, H + u0, n));
  const __m256 b_an = bias_at(P.b, 2 * H + u0, n), b_rn = bias_at(P.br, 2 * H + u0, n);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int q = 0; q < RB; ++q) {
    const int64_t off = (t * P.B + r0 + q) * H + u0;  // into (T, B, H)
    const int64_t row = (r0 + q) * H + u0;           // into (B, H)
    const __m256 r = sigmoid8(_mm256_add_ps(acc[q][0], b_r));
    const __m256 z = sigmoid8(_mm256_add_ps(acc[q][1], b_z));
    const __m256 R_n = _mm256_add_ps(acc[q][3], b_rn);
    const __m256 nn = tanh8(_mm256_fmadd_ps(r, R_n, _mm256_add_ps(acc[q][2], b_an)));
    const __m256 h = _mm256_fmadd_ps(z, load_n(hprev + row, n),
                                     _mm256_mul_ps(_mm256_sub_ps(one, z), nn));
    store_n(hout + row, h, n);
    if (P.saved[0]) {
      store_n(P.saved[0] + off, r, n);
      store_n(P.saved[1] + off, z, n);
      store_n(P.saved[2] + off, nn, n);
      store_n(P.saved[3] + off, R_n, n);
    }
  }
}

// One step for the unit blocks [jb0, jb1), all B rows.
void gru_step(const GruProblem& P, int64_t t, const float* x, const float* hprev, float* hout,
              int64_t jb0, int64_t jb1) {
  const int64_t B = P.B;
  for (int64_t jb = jb0; jb < jb1; ++jb) {
    int64_t r = 0;
    for (; r + 3 <= B; r += 3) gru_block<3>(P, t, x, hprev, hout, r, jb);
    if (B - r == 2) gru_block<2>(P, t, x, hprev, hout, r, jb);
    else if (B - r == 1) gru_block<1>(P, t, x, hprev, hout, r, jb);
  }
}

void gru_forward_thread(const GruProblem& P, Barrier& bar, int64_t jb0, int64_t jb1) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, BH = P.B * P.H;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? T - 1 - s : s;
    const int64_t tp = P.reverse ? t + 1 : t - 1;
    const float* hprev = s == 0 ? P.h0 : P.hs + tp * BH;
    float* hout = P.hs + t * BH;
    gru_step(P, t, P.X + t * B * P.D, hprev, hout, jb0, jb1);
    if (bar.n > 1) bar.wait(sense);
  }
  const int64_t tl = P.reverse ? 0 : T - 1;
  const int64_t u0 = jb0 * 8, u1 = std::min<int64_t>(jb1 * 8, P.H);
  for (int64_t b = 0; b < B && u1 > u0; ++b)
    std::memcpy(P.hT + b * P.H + u0, P.hs + tl * BH + b * P.H + u0, sizeof(float) * (u1 - u0));
}

struct GruReverse {
  int64_t T, B, H, nkb;
  const float* hs;        // (T, B, H)
  const float* h0;        // (B, H)
  const float* saved[4];  // r, z, n, R_n: (T, B, H) each
  const float* dhs;       // (T, B, H)
  const float* Wb;        // (nkb, 3H, 32)
  float* dA;              // (T, B, 3H): [dz_r | dz_z | da_n]
  float* dR;              // (T, B, 3H): [dz_r | dz_z | da_n r]
  float* dh;              // (B, H): dh_next, then d h0
  bool reverse;           // the forward ran right to left
};

void gru_reverse_thread(const GruReverse& P, Barrier& bar, int64_t kb0, int64_t kb1) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, H = P.H, BH = B * H;
  const int64_t u0 = kb0 * 32, u1 = std::min<int64_t>(kb1 * 32, H);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? s : T - 1 - s;   // reverse of the forward's order
    const int64_t tp = P.reverse ? t + 1 : t - 1;  // the step processed before t
    const float* hprev = (P.reverse ? t == T - 1 : t == 0) ? P.h0 : P.hs + tp * BH;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t u = u0; u < u1; u += 8) {
        const int n = (int)std::min<int64_t>(8, u1 - u);
        const int64_t off = t * BH + b * H + u, row = b * H + u;
        const __m256 r = load_n(P.saved[0] + off, n), z = load_n(P.saved[1] + off, n);
        const __m256 nn = load_n(P.saved[2] + off, n), R_n = load_n(P.saved[3] + off, n);
        const __m256 dh = _mm256_add_ps(load_n(P.dhs + off, n), load_n(P.dh + row, n));
        const __m256 da_n = _mm256_mul_ps(_mm256_mul_ps(dh, _mm256_sub_ps(one, z)),
                                          _mm256_mul_ps(_mm256_sub_ps(one, nn), _mm256_add_ps(one, nn)));
        const __m256 dz_r = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(da_n, R_n), r), _mm256_sub_ps(one, r));
        const __m256 dz_z = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_mul_ps(dh, _mm256_sub_ps(load_n(hprev + row, n), nn)), z),
            _mm256_sub_ps(one, z));
        float* a = P.dA + (t * B + b) * 3 * H + u;
        float* q = P.dR + (t * B + b) * 3 * H + u;
        store_n(a, dz_r, n); store_n(a + H, dz_z, n); store_n(a + 2 * H, da_n, n);
        store_n(q, dz_r, n); store_n(q + H, dz_z, n); store_n(q + 2 * H, _mm256_mul_ps(da_n, r), n);
        store_n(P.dh + row, _mm256_mul_ps(dh, z), n);  // the direct path; dR W is added below
      }
    if (bar.n > 1) bar.wait(sense);
    for (int64_t kb = kb0; kb < kb1; ++kb)
      all_rows_times_panel(P.dR + t * B * 3 * H, 3 * H, B, P.Wb + kb * 3 * H * 32, 3 * H,
                           P.dh + kb * 32, H, std::min<int64_t>(32, H - kb * 32), true);
    // no barrier: the next step's first phase reads only this thread's units of dh
  }
}

ffi::Error GruForward(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> up,
                      ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> b,
                      ffi::Buffer<ffi::F32> br, ffi::Buffer<ffi::F32> h0,
                      ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> r,
                      ffi::ResultBuffer<ffi::F32> z, ffi::ResultBuffer<ffi::F32> n,
                      ffi::ResultBuffer<ffi::F32> rn, ffi::ResultBuffer<ffi::F32> hT,
                      bool reverse, bool has_b, bool has_br, bool keep, int64_t threads) {
  auto d = xs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("xs: expected (T, B, D)");
  auto hd = h0.dimensions();
  if (hd.size() != 2) return ffi::Error::InvalidArgument("h0: expected (B, H)");
  GruProblem P{};
  P.T = d[0]; P.B = d[1]; P.D = d[2]; P.H = hd[1]; P.nb = (P.H + 7) / 8;
  if ((int64_t)wp.element_count() != P.nb * P.H * 24)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/8), H, 3, 8)");
  if ((int64_t)up.element_count() != P.nb * P.D * 24)
    return ffi::Error::InvalidArgument("packed U: expected (ceil(H/8), D, 3, 8)");
  P.X = xs.typed_data(); P.Up = up.typed_data(); P.Wp = wp.typed_data();
  P.b = has_b ? b.typed_data() : nullptr;
  P.br = has_br ? br.typed_data() : nullptr;
  P.h0 = h0.typed_data();
  P.hs = hs->typed_data();
  float* kept[4] = {r->typed_data(), z->typed_data(), n->typed_data(), rn->typed_data()};
  for (int q = 0; q < 4; ++q) P.saved[q] = keep ? kept[q] : nullptr;
  FreshOutputs fresh;
  for (auto* out : {&hs, &r, &z, &n, &rn}) fresh.add(*out);
  P.hT = hT->typed_data();
  P.reverse = reverse;
  if (P.T == 0) {
    std::memcpy(P.hT, P.h0, sizeof(float) * P.B * P.H);
    return ffi::Error::Success();
  }
  on_block_shares(threads, P.nb, [&](Barrier& bar, int64_t jb0, int64_t jb1) {
    gru_forward_thread(P, bar, jb0, jb1);
  }, &fresh);
  return ffi::Error::Success();
}

ffi::Error GruBackward(ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> r,
                       ffi::Buffer<ffi::F32> z, ffi::Buffer<ffi::F32> n,
                       ffi::Buffer<ffi::F32> rn, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> dhs, ffi::Buffer<ffi::F32> dh_final,
                       ffi::Buffer<ffi::F32> wb, ffi::ResultBuffer<ffi::F32> da,
                       ffi::ResultBuffer<ffi::F32> dr, ffi::ResultBuffer<ffi::F32> dh0,
                       bool reverse, int64_t threads) {
  auto d = hs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("hs: expected (T, B, H)");
  GruReverse P{};
  P.T = d[0]; P.B = d[1]; P.H = d[2]; P.nkb = (P.H + 31) / 32;
  if ((int64_t)wb.element_count() != P.nkb * 3 * P.H * 32)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/32), 3H, 32)");
  P.hs = hs.typed_data(); P.h0 = h0.typed_data();
  P.saved[0] = r.typed_data(); P.saved[1] = z.typed_data();
  P.saved[2] = n.typed_data(); P.saved[3] = rn.typed_data();
  P.dhs = dhs.typed_data(); P.Wb = wb.typed_data();
  P.dA = da->typed_data(); P.dR = dr->typed_data(); P.dh = dh0->typed_data();
  FreshOutputs fresh;
  fresh.add(da);
  fresh.add(dr);
  P.reverse = reverse;
  std::memcpy(P.dh, dh_final.typed_data(), sizeof(float) * P.B * P.H);
  if (P.T == 0) return ffi::Error::Success();
  on_block_shares(threads, P.nkb, [&](Barrier& bar, int64_t kb0, int64_t kb1) {
    gru_reverse_thread(P, bar, kb0, kb1);
  }, &fresh);
  return ffi::Error::Success();
}

// The sampler (sampler.h) over this cell's step.
ffi::Error GruSample(ffi::Buffer<ffi::F32> table, ffi::Buffer<ffi::F32> x0,
                     ffi::Buffer<ffi::F32> up, ffi::Buffer<ffi::F32> wp,
                     ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> br,
                     ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> vp,
                     ffi::Buffer<ffi::F32> c, ffi::Buffer<ffi::F32> noise,
                     ffi::ResultBuffer<ffi::S32> tokens, ffi::ResultBuffer<ffi::F32> hT,
                     bool has_b, bool has_br, bool greedy, float temperature, int64_t threads) {
  Sampling S{};
  if (auto e = sampling_of(S, table, x0, h0, vp, c, noise, tokens, hT, greedy, temperature);
      e.failure())
    return e;
  GruProblem P{};
  P.T = 1; P.B = S.B; P.D = S.D; P.H = S.H; P.nb = (P.H + 7) / 8;
  if ((int64_t)wp.element_count() != P.nb * P.H * 24)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/8), H, 3, 8)");
  if ((int64_t)up.element_count() != P.nb * P.D * 24)
    return ffi::Error::InvalidArgument("packed U: expected (ceil(H/8), D, 3, 8)");
  P.Up = up.typed_data(); P.Wp = wp.typed_data();
  P.b = has_b ? b.typed_data() : nullptr;
  P.br = has_br ? br.typed_data() : nullptr;
  sample(S, P.nb, [&](const float* x, const float* hprev, float* hout, int64_t, int64_t jb0,
                      int64_t jb1) { gru_step(P, 0, x, hprev, hout, jb0, jb1); }, threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnGruSample, GruSample,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // table (C, D)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x0 (B, D)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // U packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // V^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c (C,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // noise (T, B, C)
                                  .Ret<ffi::Buffer<ffi::S32>>()  // tokens (T, B)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Attr<bool>("has_b")
                                  .Attr<bool>("has_br")
                                  .Attr<bool>("greedy")
                                  .Attr<float>("temperature")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs (T, B, D)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // U packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // r (0 elements unless keep)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // z
                                  .Ret<ffi::Buffer<ffi::F32>>()  // n
                                  .Ret<ffi::Buffer<ffi::F32>>()  // R_n
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("has_b")
                                  .Attr<bool>("has_br")
                                  .Attr<bool>("keep")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // z
                                  .Arg<ffi::Buffer<ffi::F32>>()  // n
                                  .Arg<ffi::Buffer<ffi::F32>>()  // R_n
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_hs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d h_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed (ceil(H/32), 3H, 32)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dA (T, B, 3H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dR (T, B, 3H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h0
                                  .Attr<bool>("reverse")
                                  .Attr<int64_t>("threads"));

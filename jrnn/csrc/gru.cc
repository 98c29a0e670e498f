// jrnn's GRU on the CPU: the forward recurrence and the reverse loop of BPTT, each one XLA
// FFI custom call (jrnn/native.py; built with lstm.cc by `python -m jrnn.native build`).
//
// Forward, per step t (in processing order), the equations of jrnn/cells/gru.py in float32:
//   A = x_t U^T + b, R = h_{t-1} W^T + b_r, each split into H-blocks (r, z, n);
//   r = sigmoid(A_r + R_r), z = sigmoid(A_z + R_z), n = tanh(A_n + r R_n),
//   h_t = (1 - z) n + z h_{t-1}.
// Both products run in one register-blocked micro-kernel (common.h's Tile) per block of
// kGruUnits hidden units (one vector: 8, or 16 in the AVX-512 build) over U and W packed as
// (nb, K, 3, kGruUnits) (the three gates' columns side by side, one register each): r and
// z take both products, n's register holds A_n after the first and R_n after the second.
// The threads split the rows or the units as in lstm.cc.
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
  const float* Up;     // (nb, D, 3, kGruUnits)
  const float* Wp;     // (nb, H, 3, kGruUnits)
  const float* b;      // (3H,) or null
  const float* br;     // (3H,) or null
  const float* h0;     // (B, H)
  float* hs;           // (T, B, H)
  float* saved[4];     // r, z, n, R_n: (T, B, H) each, or null
  float* hT;           // (B, H)
  bool reverse;
};

// The GRU's unit block: one vector of the build (8 units, AVX-512 16), so that each gate
// of a block is one register of the tile and the gate math runs on the sums as they are;
// U and W are packed (ceil(H / kGruUnits), K, 3, kGruUnits) to match (jrnn/native.py asks
// the library for it: JrnnGruUnits).
constexpr int kGruUnits = kVecLanes;
constexpr const char* kGruBlocks = kGruUnits == 8 ? "ceil(H/8)" : "ceil(H/16)";
constexpr const char* kGruRow = kGruUnits == 8 ? "3, 8" : "3, 16";

inline Vec bias_at(const float* v, int64_t i, int n) {
  return v ? load_lanes<Vec>(v + i, n) : vec::set1<Vec>(0.0f);
}

// Rows r0 .. r0 + RB - 1 of the unit block jb at step t: both products, then the gates.
// The input projection: x U^T from x, the step's inputs (B, D); or, where a is given, each
// row's own 3H projections a[b] (the sampler's), and then the tile takes h's product alone.
template <int RB>
inline void gru_block(const GruProblem& P, int64_t t, const float* x, const float* const* a,
                      const float* hprev, float* hout, int64_t r0, int64_t jb) {
  using namespace vec;
  const int64_t H = P.H, D = P.D;
  constexpr int64_t width = 3 * kGruUnits;  // floats in a panel row
  // r and z take both products; n's register holds A_n after the first, R_n after the second
  Tile<RB, width / 8> acc;
  static_assert(Tile<RB, width / 8>::NZ == 3, "one register per gate");
  acc.zero();
  Vec A[RB][3];
  if (!a) {
    acc.accumulate(x + r0 * D, D, P.Up + jb * D * width, D);
    acc.registers(A);
    acc.template clear_register<2>();
  }
  acc.accumulate(hprev + r0 * H, H, P.Wp + jb * H * width, H);
  Vec R[RB][3];  // r and z: both products (h's alone where a is given); n: R_n alone
  acc.registers(R);
  const int64_t u0 = jb * kGruUnits;
  const int n = (int)std::min<int64_t>(kGruUnits, H - u0);
  const Vec b_r = add(bias_at(P.b, u0, n), bias_at(P.br, u0, n));
  const Vec b_z = add(bias_at(P.b, H + u0, n), bias_at(P.br, H + u0, n));
  const Vec b_an = bias_at(P.b, 2 * H + u0, n), b_rn = bias_at(P.br, 2 * H + u0, n);
#pragma GCC unroll 1
  for (int q = 0; q < RB; ++q) {  // a loop, as in lstm.cc
    const int64_t off = (t * P.B + r0 + q) * H + u0;  // into (T, B, H)
    const int64_t row = (r0 + q) * H + u0;           // into (B, H)
    Vec s_r = R[q][0], s_z = R[q][1], A_n;
    if (a) {
      const float* proj = a[r0 + q] + u0;  // this row's [A_r | A_z | A_n], at unit u0
      s_r = add(s_r, load_lanes<Vec>(proj, n));
      s_z = add(s_z, load_lanes<Vec>(proj + H, n));
      A_n = load_lanes<Vec>(proj + 2 * H, n);
    } else {
      A_n = A[q][2];
    }
    const Vec r = vsigmoid(add(s_r, b_r));
    const Vec z = vsigmoid(add(s_z, b_z));
    const Vec R_n = add(R[q][2], b_rn);
    const Vec nn = vtanh(fmadd(r, R_n, add(A_n, b_an)));
    const Vec h = fmadd(z, load_lanes<Vec>(hprev + row, n), mul(sub(set1<Vec>(1.0f), z), nn));
    store_lanes(hout + row, h, n);
    if (P.saved[0]) {
      store_lanes(P.saved[0] + off, r, n);
      store_lanes(P.saved[1] + off, z, n);
      store_lanes(P.saved[2] + off, nn, n);
      store_lanes(P.saved[3] + off, R_n, n);
    }
  }
}

// One step for the rows [b0, b1) and unit blocks [kb0, kb1) (x and a as in gru_block).
void gru_step(const GruProblem& P, int64_t t, const float* x, const float* const* a,
              const float* hprev, float* hout, const Share& sh) {
  for (int64_t jb = sh.kb0; jb < sh.kb1; ++jb)
    over_row_tiles(sh.b1 - sh.b0, [&](auto RB, int64_t r0) {
      gru_block<RB>(P, t, x, a, hprev, hout, sh.b0 + r0, jb);
    });
}

void gru_forward_thread(const GruProblem& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, BH = P.B * P.H;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? T - 1 - s : s;
    const int64_t tp = P.reverse ? t + 1 : t - 1;
    const float* hprev = s == 0 ? P.h0 : P.hs + tp * BH;
    float* hout = P.hs + t * BH;
    gru_step(P, t, P.X + t * B * P.D, nullptr, hprev, hout, sh);
    if (bar.n > 1) bar.wait(sense);
  }
  const int64_t tl = P.reverse ? 0 : T - 1;
  const int64_t u0 = sh.kb0 * kGruUnits, u1 = std::min<int64_t>(sh.kb1 * kGruUnits, P.H);
  for (int64_t b = sh.b0; b < sh.b1 && u1 > u0; ++b)
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

void gru_reverse_thread(const GruReverse& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, H = P.H, BH = B * H, b0 = sh.b0, b1 = sh.b1;
  const int64_t u0 = sh.kb0 * 32, u1 = std::min<int64_t>(sh.kb1 * 32, H);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? s : T - 1 - s;   // reverse of the forward's order
    const int64_t tp = P.reverse ? t + 1 : t - 1;  // the step processed before t
    const float* hprev = (P.reverse ? t == T - 1 : t == 0) ? P.h0 : P.hs + tp * BH;
    for (int64_t b = b0; b < b1; ++b)
      over_lanes(u0, u1, [&]<class V>(int64_t u, int n) {
        using namespace vec;
        const V one = set1<V>(1.0f);
        const int64_t off = t * BH + b * H + u, row = b * H + u;
        const V r = load_lanes<V>(P.saved[0] + off, n), z = load_lanes<V>(P.saved[1] + off, n);
        const V nn = load_lanes<V>(P.saved[2] + off, n), R_n = load_lanes<V>(P.saved[3] + off, n);
        const V dh = add(load_lanes<V>(P.dhs + off, n), load_lanes<V>(P.dh + row, n));
        const V da_n = mul(mul(dh, sub(one, z)), mul(sub(one, nn), add(one, nn)));
        const V dz_r = mul(mul(mul(da_n, R_n), r), sub(one, r));
        const V dz_z = mul(mul(mul(dh, sub(load_lanes<V>(hprev + row, n), nn)), z), sub(one, z));
        float* a = P.dA + (t * B + b) * 3 * H + u;
        float* q = P.dR + (t * B + b) * 3 * H + u;
        store_lanes(a, dz_r, n); store_lanes(a + H, dz_z, n); store_lanes(a + 2 * H, da_n, n);
        store_lanes(q, dz_r, n); store_lanes(q + H, dz_z, n);
        store_lanes(q + 2 * H, mul(da_n, r), n);
        store_lanes(P.dh + row, mul(dh, z), n);  // the direct path; dR W is added below
      });
    if (bar.n > 1) bar.wait(sense);
    rows_times_panels(P.dR + (t * B + b0) * 3 * H, 3 * H, b1 - b0, P.Wb, 3 * H, sh.kb0, sh.kb1,
                      P.dh + b0 * H, H, H, true);
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
  P.T = d[0]; P.B = d[1]; P.D = d[2]; P.H = hd[1]; P.nb = (P.H + kGruUnits - 1) / kGruUnits;
  if (auto e = check_packed(up, wp, P.nb, P.D, P.H, 3 * kGruUnits, kGruBlocks, kGruRow);
      e.failure())
    return e;
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
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nb,
                       [&](Barrier& bar, const Share& sh) {
    gru_forward_thread(P, bar, sh);
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
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nkb,
                       [&](Barrier& bar, const Share& sh) {
    gru_reverse_thread(P, bar, sh);
  }, &fresh);
  return ffi::Error::Success();
}

// The sampler (sampler.h) over this cell's step.
ffi::Error GruSample(ffi::Buffer<ffi::F32> proj, ffi::Buffer<ffi::F32> a0,
                     ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> b,
                     ffi::Buffer<ffi::F32> br, ffi::Buffer<ffi::F32> h0,
                     ffi::Buffer<ffi::F32> vp, ffi::Buffer<ffi::F32> c,
                     ffi::Buffer<ffi::F32> noise, ffi::ResultBuffer<ffi::S32> tokens,
                     ffi::ResultBuffer<ffi::F32> hT, bool has_b, bool has_br, bool greedy,
                     float temperature, int64_t threads) {
  Sampling S{};
  if (auto e = sampling_of(S, 3, proj, a0, h0, vp, c, noise, tokens, hT, greedy, temperature);
      e.failure())
    return e;
  GruProblem P{};
  P.T = 1; P.B = S.B; P.H = S.H; P.nb = (P.H + kGruUnits - 1) / kGruUnits;
  if (auto e = check_panel(wp, "W", P.nb, P.H, "H", 3 * kGruUnits, kGruBlocks, kGruRow);
      e.failure())
    return e;
  P.Wp = wp.typed_data();
  P.b = has_b ? b.typed_data() : nullptr;
  P.br = has_br ? br.typed_data() : nullptr;
  sample(S, P.nb, [&](const float* const* a, const float* hprev, float* hout, int64_t,
                      const Share& sh) {
    gru_step(P, 0, nullptr, a, hprev, hout, sh);
  }, threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnGruSample, GruSample,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // table U^T (C, 3H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x0 U^T (B, 3H)
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

// The unit block of the GRU's packed U and W in this build (jrnn/native.py packs to match).
extern "C" __attribute__((visibility("default"))) int JrnnGruUnits() { return kGruUnits; }

// jrnn's LSTM forward recurrence on the CPU as one XLA FFI custom call (jrnn/native.py;
// built by `python -m jrnn.native build`).
//
// Per step t (in processing order): z = A_t + h_{t-1} W^T + b_r, gates (i, f, g, o) =
// (sigmoid, sigmoid, tanh, sigmoid) of z's four H-blocks, c_t = f c_{t-1} + i g,
// h_t = o tanh(c_t); the same equations as jrnn/cells/lstm.py, in float32.
//
// The product h_{t-1} W^T runs in a register-blocked micro-kernel (common.h's Tile: AVX2/FMA,
// or AVX-512 where built so) over W packed once by the caller as Wp[nb][H][4][8]: for each
// block of 8 hidden units, the four gates' 8 columns side by side, so one pass over the panel
// gives every gate of those units for a tile of rows, and the gate math follows on the sums
// (R_t is never stored), two rows to a 16-lane vector in the AVX-512 build.
// The work is split over `threads` threads (this one and pooled ones) by common.h's
// on_recurrence_shares: where each gets enough rows of the batch, the threads split the
// rows and run independent recurrences; else they split the hidden units
// in contiguous unit blocks, and a spin barrier per step makes h_t complete before step
// t + 1 reads it (h_t is read back from the output hs, so that is all the exchange needed).
#include "sampler.h"

namespace {  // NOLINT

using namespace jrnn_native;  // NOLINT

struct Problem {
  int64_t T, B, H, nb;
  const float* A[4];   // (T, B, H) each: the hoisted input projection with its bias, or
                       // null: then the projection runs in the step from X and Up
  const float* X;      // (T, B, D) inputs, or null
  const float* Up;     // (nb, D, 4, 8): U packed as W is
  int64_t D;
  const float* Wp;     // (nb, H, 4, 8)
  const float* br;     // (4H,) or null
  const float* h0;     // (B, H)
  const float* c0;     // (B, H)
  float* hs;           // (T, B, H)
  float* cs;           // (T, B, H) or null (then c lives in `cwork`)
  float* gates[4];     // (T, B, H) each, or null
  float* hT;           // (B, H)
  float* cT;           // (B, H)
  float* cwork;        // (B, H) scratch when cs is null
  bool reverse;
  FreshOutputs fresh;  // the outputs, faulted in before the loop
};

// Rows r0 .. r0 + RB - 1 of NB 8-unit blocks from jb (one, or two side by side in a tile of
// few rows: see over_tiles_and_blocks) at step t: the product and the gate math.
// The input projection: from x, the step's inputs (B, D), when it runs in the step; else
// from a, each row's own 4H projections (the sampler's); else from P.A.
template <int RB, int NB>
inline void block(const Problem& P, int64_t t, const float* x, const float* const* a,
                  const float* hprev, const float* cprev, float* hout, float* cout, int64_t r0,
                  int64_t jb) {
  const int64_t H = P.H;
  Tile<RB, 4 * NB> acc;
  acc.zero();
  if constexpr (NB == 2) {
    if (x) acc.accumulate_pair(x + r0 * P.D, P.D, P.Up + jb * P.D * 32,
                               P.Up + (jb + 1) * P.D * 32, P.D);
    acc.accumulate_pair(hprev + r0 * H, H, P.Wp + jb * H * 32, P.Wp + (jb + 1) * H * 32, H);
  } else {
    if (x) acc.accumulate(x + r0 * P.D, P.D, P.Up + jb * P.D * 32, P.D);
    acc.accumulate(hprev + r0 * H, H, P.Wp + jb * H * 32, H);
  }
  __m256 sums[RB][4 * NB];
  acc.parts(sums);
  for (int q = 0; q < NB; ++q) {
    const int64_t u0 = (jb + q) * 8;
    const int n = (int)std::min<int64_t>(8, H - u0);
    __m256 bias[4];
    for (int g = 0; g < 4; ++g)
      bias[g] = P.br ? load_n(P.br + g * H + u0, n) : _mm256_setzero_ps();
    over_row_pairs<RB>([&]<class V>(int r) {  // a loop (see common.h's Tile)
      using namespace vec;
      const int64_t off = (t * P.B + r0 + r) * H + u0;  // into (T, B, H)
      const int64_t row = (r0 + r) * H + u0;           // into (B, H)
      V z[4];
      for (int g = 0; g < 4; ++g) {
        z[g] = add(pair<V>(sums[r][4 * q + g], sums[r + kRowsIn<V> - 1][4 * q + g]),
                   pair<V>(bias[g], bias[g]));
        if (a) z[g] = add(z[g], pair<V>(load_n(a[r0 + r] + g * H + u0, n),
                                        load_n(a[r0 + r + kRowsIn<V> - 1] + g * H + u0, n)));
        else if (!x) z[g] = add(z[g], load_rows<V>(P.A[g] + off, H, n));
      }
#ifdef JRNN_NO_GATES
      const V i = z[0], f = z[1], gg = z[2], o = z[3];
      const V c = fmadd(f, load_rows<V>(cprev + row, H, n), mul(i, gg));
      const V h = mul(o, mul(c, set1<V>(1e-3f)));
#else
      const V i = vsigmoid(z[0]), f = vsigmoid(z[1]), gg = vtanh(z[2]), o = vsigmoid(z[3]);
      const V c = fmadd(f, load_rows<V>(cprev + row, H, n), mul(i, gg));
      const V h = mul(o, vtanh(c));
#endif
      store_rows(hout + row, H, h, n);
      store_rows(cout + row, H, c, n);
      if (P.gates[0]) {
        store_rows(P.gates[0] + off, H, i, n);
        store_rows(P.gates[1] + off, H, f, n);
        store_rows(P.gates[2] + off, H, gg, n);
        store_rows(P.gates[3] + off, H, o, n);
      }
    });
  }
}

// One step for the rows [b0, b1) and unit blocks [kb0, kb1) (x and a as in block).
void step(const Problem& P, int64_t t, const float* x, const float* const* a,
          const float* hprev, const float* cprev, float* hout, float* cout, const Share& sh) {
  over_tiles_and_blocks(sh.b1 - sh.b0, sh.kb0, sh.kb1,
                        [&](auto RB, int64_t r0, int64_t jb, auto NB) {
    block<RB, NB>(P, t, x, a, hprev, cprev, hout, cout, sh.b0 + r0, jb);
  });
}

void run_thread(const Problem& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, BH = P.B * P.H;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? T - 1 - s : s;
    const int64_t tp = P.reverse ? t + 1 : t - 1;
    const float* hprev = s == 0 ? P.h0 : P.hs + tp * BH;
    float* hout = P.hs + t * BH;
    const float* cprev;
    float* cout;
    if (P.cs) {
      cprev = s == 0 ? P.c0 : P.cs + tp * BH;
      cout = P.cs + t * BH;
    } else {
      cprev = s == 0 ? P.c0 : P.cwork;
      cout = P.cwork;  // each thread reads and writes only its own share: in place is safe
    }
    step(P, t, P.X ? P.X + t * B * P.D : nullptr, nullptr, hprev, cprev, hout, cout, sh);
    if (bar.n > 1) bar.wait(sense);
  }
  // Final carry: this thread's share of the last step processed.
  const int64_t tl = P.reverse ? 0 : T - 1;
  const float* cl = P.cs ? P.cs + tl * BH : P.cwork;
  for (int64_t b = sh.b0; b < sh.b1; ++b) {
    const int64_t u0 = sh.kb0 * 8, u1 = std::min<int64_t>(sh.kb1 * 8, P.H);
    if (u1 <= u0) break;
    std::memcpy(P.hT + b * P.H + u0, P.hs + tl * BH + b * P.H + u0, sizeof(float) * (u1 - u0));
    std::memcpy(P.cT + b * P.H + u0, cl + b * P.H + u0, sizeof(float) * (u1 - u0));
  }
}

void run(Problem& P, int64_t threads) {
  if (P.T == 0) {
    std::memcpy(P.hT, P.h0, sizeof(float) * P.B * P.H);
    std::memcpy(P.cT, P.c0, sizeof(float) * P.B * P.H);
    return;
  }
  std::vector<float> cwork;
  if (!P.cs) {
    cwork.assign(P.B * P.H, 0.0f);
    P.cwork = cwork.data();
  }
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nb,
                       [&](Barrier& bar, const Share& sh) {
    run_thread(P, bar, sh);
  }, &P.fresh);
}

// ---- the reverse loop of BPTT (cells/lstm.py's step_vjp, then dh_{t-1} = dz W) ----
//
// Per step t in reverse processing order, each thread first its own hidden units:
//   dh = d_hs[t] + dh_next, tanh_c = tanh(c_t), dc = dc_next + dh o (1 - tanh_c^2),
//   dz = (dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tanh_c o(1-o)) -> dA[t]
//   (one (B, 4H) row block per step, the gates side by side: the driver's dW, dU and
//   dX are then each one product over all T·B rows),
//   dc_next = dc f;
// then, after a barrier (dz of every unit written), its own units of
//   dh_next = dz W = sum_g dz_g W_g
// from W packed as Wb[kb][4H][32] (32 output units of h side by side per row of W).
// dA[t] is a fresh row per step, so one barrier per step is all the exchange needed.
struct Reverse {
  int64_t T, B, H, nkb;
  const float* cs;       // (T, B, H)
  const float* gates[4]; // (T, B, H) each
  const float* c0;       // (B, H)
  const float* dhs;      // (T, B, H)
  const float* Wb;       // (nkb, 4H, 32)
  float* dA;             // (T, B, 4H): [dz_i | dz_f | dz_g | dz_o]
  float* dh;             // (B, H): dh_next, then d h0
  float* dc;             // (B, H): dc_next, then d c0
  bool reverse;          // the forward ran right to left
  FreshOutputs fresh;    // dA, faulted in before the loop
};

void reverse_thread(const Reverse& P, Barrier& bar, const Share& sh) {
  int sense = 0;
  const int64_t T = P.T, B = P.B, H = P.H, BH = B * H, b0 = sh.b0, b1 = sh.b1;
  const int64_t u0 = sh.kb0 * 32, u1 = std::min<int64_t>(sh.kb1 * 32, H);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = P.reverse ? s : T - 1 - s;   // reverse of the forward's order
    const int64_t tp = P.reverse ? t + 1 : t - 1;  // the step processed before t
    const bool first = P.reverse ? t == T - 1 : t == 0;
    for (int64_t b = b0; b < b1; ++b)
      over_lanes(u0, u1, [&]<class V>(int64_t u, int n) {
        using namespace vec;
        const V one = set1<V>(1.0f);
        const int64_t off = t * BH + b * H + u, row = b * H + u;
        const V i = load_lanes<V>(P.gates[0] + off, n), f = load_lanes<V>(P.gates[1] + off, n);
        const V g = load_lanes<V>(P.gates[2] + off, n), o = load_lanes<V>(P.gates[3] + off, n);
        const V c = load_lanes<V>(P.cs + off, n);
        const V cp = load_lanes<V>(first ? P.c0 + row : P.cs + tp * BH + row, n);
        const V dh = add(load_lanes<V>(P.dhs + off, n), load_lanes<V>(P.dh + row, n));
        const V tc = vtanh(c);
        const V dtc = mul(sub(one, tc), add(one, tc));
        const V dc = fmadd(mul(dh, o), dtc, load_lanes<V>(P.dc + row, n));
        const V di = mul(mul(mul(dc, g), i), sub(one, i));
        const V df = mul(mul(mul(dc, cp), f), sub(one, f));
        const V dg = mul(mul(dc, i), mul(sub(one, g), add(one, g)));
        const V dz_o = mul(mul(mul(dh, tc), o), sub(one, o));
        float* dz = P.dA + (t * B + b) * 4 * H + u;
        store_lanes(dz, di, n);
        store_lanes(dz + H, df, n);
        store_lanes(dz + 2 * H, dg, n);
        store_lanes(dz + 3 * H, dz_o, n);
        store_lanes(P.dc + row, mul(dc, f), n);
      });
    if (bar.n > 1) bar.wait(sense);
    rows_times_panels(P.dA + (t * B + b0) * 4 * H, 4 * H, b1 - b0, P.Wb, 4 * H, sh.kb0, sh.kb1,
                      P.dh + b0 * H, H, H, false);
    // no barrier: the next step's first phase reads only this thread's units of dh and dc
  }
}

void run_reverse(Reverse& P, int64_t threads) {
  if (P.T == 0) return;
  on_recurrence_shares(threads, P.B, kLoopMinRows, P.nkb,
                       [&](Barrier& bar, const Share& sh) {
    reverse_thread(P, bar, sh);
  }, &P.fresh);
}

ffi::Error Backward(ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> gi, ffi::Buffer<ffi::F32> gf,
                    ffi::Buffer<ffi::F32> gg, ffi::Buffer<ffi::F32> go,
                    ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> dhs,
                    ffi::Buffer<ffi::F32> dh_final, ffi::Buffer<ffi::F32> dc_final,
                    ffi::Buffer<ffi::F32> wb, ffi::ResultBuffer<ffi::F32> da,
                    ffi::ResultBuffer<ffi::F32> dh0,
                    ffi::ResultBuffer<ffi::F32> dc0, bool reverse, int64_t threads) {
  auto d = cs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("cs: expected (T, B, H)");
  Reverse P{};
  P.T = d[0]; P.B = d[1]; P.H = d[2]; P.nkb = (P.H + 31) / 32;
  if ((int64_t)wb.element_count() != P.nkb * 4 * P.H * 32)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/32), 4H, 32)");
  P.cs = cs.typed_data();
  P.gates[0] = gi.typed_data(); P.gates[1] = gf.typed_data();
  P.gates[2] = gg.typed_data(); P.gates[3] = go.typed_data();
  P.c0 = c0.typed_data(); P.dhs = dhs.typed_data(); P.Wb = wb.typed_data();
  P.dA = da->typed_data();
  P.fresh.add(da);
  P.dh = dh0->typed_data(); P.dc = dc0->typed_data();
  const size_t bh = sizeof(float) * P.B * P.H;
  std::memcpy(P.dh, dh_final.typed_data(), bh);
  std::memcpy(P.dc, dc_final.typed_data(), bh);
  P.reverse = reverse;
  run_reverse(P, threads);
  return ffi::Error::Success();
}

ffi::Error Outputs(Problem& P, ffi::ResultBuffer<ffi::F32>& hs, ffi::ResultBuffer<ffi::F32>& cs,
                   ffi::ResultBuffer<ffi::F32>& gi, ffi::ResultBuffer<ffi::F32>& gf,
                   ffi::ResultBuffer<ffi::F32>& gg, ffi::ResultBuffer<ffi::F32>& go,
                   ffi::ResultBuffer<ffi::F32>& hT, ffi::ResultBuffer<ffi::F32>& cT, bool keep) {
  P.hs = hs->typed_data();
  P.cs = keep ? cs->typed_data() : nullptr;
  P.gates[0] = keep ? gi->typed_data() : nullptr;
  P.gates[1] = keep ? gf->typed_data() : nullptr;
  P.gates[2] = keep ? gg->typed_data() : nullptr;
  P.gates[3] = keep ? go->typed_data() : nullptr;
  P.hT = hT->typed_data(); P.cT = cT->typed_data();
  for (auto* out : {&hs, &cs, &gi, &gf, &gg, &go}) P.fresh.add(*out);
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> ai, ffi::Buffer<ffi::F32> af, ffi::Buffer<ffi::F32> ag,
                   ffi::Buffer<ffi::F32> ao, ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> br,
                   ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                   ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                   ffi::ResultBuffer<ffi::F32> gi, ffi::ResultBuffer<ffi::F32> gf,
                   ffi::ResultBuffer<ffi::F32> gg, ffi::ResultBuffer<ffi::F32> go,
                   ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT,
                   bool reverse, bool has_bias, bool keep, int64_t threads) {
  auto d = ai.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("A: expected (T, B, H)");
  Problem P{};
  P.T = d[0]; P.B = d[1]; P.H = d[2]; P.nb = (P.H + 7) / 8;
  if ((int64_t)wp.element_count() != P.nb * P.H * 32)
    return ffi::Error::InvalidArgument("packed W: expected (ceil(H/8), H, 4, 8)");
  P.A[0] = ai.typed_data(); P.A[1] = af.typed_data(); P.A[2] = ag.typed_data(); P.A[3] = ao.typed_data();
  P.Wp = wp.typed_data();
  P.br = has_bias ? br.typed_data() : nullptr;
  P.h0 = h0.typed_data(); P.c0 = c0.typed_data();
  Outputs(P, hs, cs, gi, gf, gg, go, hT, cT, keep);
  P.reverse = reverse;
  run(P, threads);
  return ffi::Error::Success();
}

// The same loop with the input projection in the step: z = x_t Uᵀ + h_{t-1} Wᵀ + bias, from
// xs (T, B, D) and U packed as W is (no hoisted (T, B, 4H) array is ever written).
ffi::Error ForwardX(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> up, ffi::Buffer<ffi::F32> wp,
                    ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> h0,
                    ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> hs,
                    ffi::ResultBuffer<ffi::F32> cs, ffi::ResultBuffer<ffi::F32> gi,
                    ffi::ResultBuffer<ffi::F32> gf, ffi::ResultBuffer<ffi::F32> gg,
                    ffi::ResultBuffer<ffi::F32> go, ffi::ResultBuffer<ffi::F32> hT,
                    ffi::ResultBuffer<ffi::F32> cT, bool reverse, bool has_bias, bool keep,
                    int64_t threads) {
  auto d = xs.dimensions();
  if (d.size() != 3) return ffi::Error::InvalidArgument("xs: expected (T, B, D)");
  auto hd = h0.dimensions();
  if (hd.size() != 2) return ffi::Error::InvalidArgument("h0: expected (B, H)");
  Problem P{};
  P.T = d[0]; P.B = d[1]; P.D = d[2]; P.H = hd[1]; P.nb = (P.H + 7) / 8;
  if (auto e = check_packed(up, wp, P.nb, P.D, P.H, 32, "ceil(H/8)", "4, 8"); e.failure())
    return e;
  P.X = xs.typed_data(); P.Up = up.typed_data(); P.Wp = wp.typed_data();
  P.br = has_bias ? bias.typed_data() : nullptr;
  P.h0 = h0.typed_data(); P.c0 = c0.typed_data();
  Outputs(P, hs, cs, gi, gf, gg, go, hT, cT, keep);
  P.reverse = reverse;
  run(P, threads);
  return ffi::Error::Success();
}

// The sampler (sampler.h) over this cell's step; c lives in a (B, H) array updated in place
// (each thread its own units).
ffi::Error Sample(ffi::Buffer<ffi::F32> proj, ffi::Buffer<ffi::F32> a0,
                  ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bias,
                  ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                  ffi::Buffer<ffi::F32> vp, ffi::Buffer<ffi::F32> c,
                  ffi::Buffer<ffi::F32> noise, ffi::ResultBuffer<ffi::S32> tokens,
                  ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT,
                  bool has_bias, bool greedy, float temperature, int64_t threads) {
  Sampling S{};
  if (auto e = sampling_of(S, 4, proj, a0, h0, vp, c, noise, tokens, hT, greedy, temperature);
      e.failure())
    return e;
  Problem P{};
  P.T = 1; P.B = S.B; P.H = S.H; P.nb = (P.H + 7) / 8;
  if (auto e = check_panel(wp, "W", P.nb, P.H, "H", 32, "ceil(H/8)", "4, 8"); e.failure())
    return e;
  if ((int64_t)c0.element_count() != S.B * S.H)
    return ffi::Error::InvalidArgument("c0: expected (B, H)");
  P.Wp = wp.typed_data();
  P.br = has_bias ? bias.typed_data() : nullptr;
  float* cs = cT->typed_data();  // c_s, in place; c_T at the end
  sample(S, P.nb, [&](const float* const* a, const float* hprev, float* hout, int64_t s,
                      const Share& sh) {
    step(P, 0, nullptr, a, hprev, s == 0 ? c0.typed_data() : cs, hout, cs, sh);
  }, threads);
  if (S.T == 0) std::memcpy(cs, c0.typed_data(), sizeof(float) * S.B * S.H);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnLstmSample, Sample,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // table U^T (C, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x0 U^T (B, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b + b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // V^T packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c (C,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // noise (T, B, C)
                                  .Ret<ffi::Buffer<ffi::S32>>()  // tokens (T, B)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c_T
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("greedy")
                                  .Attr<float>("temperature")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnLstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A_i
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A_f
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A_g
                                  .Arg<ffi::Buffer<ffi::F32>>()  // A_o
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cs (0 elements unless keep)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // i (0 elements unless keep)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // f
                                  .Ret<ffi::Buffer<ffi::F32>>()  // g
                                  .Ret<ffi::Buffer<ffi::F32>>()  // o
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c_T
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("keep")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnLstmForwardX, ForwardX,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs (T, B, D)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // U packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b + b_r
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cs (0 elements unless keep)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // i (0 elements unless keep)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // f
                                  .Ret<ffi::Buffer<ffi::F32>>()  // g
                                  .Ret<ffi::Buffer<ffi::F32>>()  // o
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_T
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c_T
                                  .Attr<bool>("reverse")
                                  .Attr<bool>("has_bias")
                                  .Attr<bool>("keep")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnLstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // i
                                  .Arg<ffi::Buffer<ffi::F32>>()  // f
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g
                                  .Arg<ffi::Buffer<ffi::F32>>()  // o
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0 (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_hs (T, B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d h_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d c_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed (ceil(H/32), 4H, 32)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dA (T, B, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d c0
                                  .Attr<bool>("reverse")
                                  .Attr<int64_t>("threads"));

#ifdef JRNN_NATIVE_BENCH_MAIN
// A standalone timing harness (not part of the library): g++ -DJRNN_NATIVE_BENCH_MAIN ...
#include <chrono>
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
  const int64_t T = atoi(argv[1]), B = atoi(argv[2]), H = atoi(argv[3]), th = atoi(argv[4]);
  const bool keep = argc > 5 ? atoi(argv[5]) : 1;
  const int64_t nb = (H + 7) / 8, n = T * B * H;
  // 64-byte aligned, as XLA's buffers are (a 16-byte aligned W panel measured 17% slower)
  struct Aligned {
    float* p;
    size_t n;
    Aligned(size_t n, float v = 0) : p((float*)std::aligned_alloc(64, (n * 4 + 63) / 64 * 64)), n(n) {
      std::fill(p, p + n, v);
    }
    ~Aligned() { std::free(p); }
    float* data() { return p; }
    size_t size() const { return n; }
    float& operator[](size_t k) { return p[k]; }
  };
  Aligned A(4 * n), Wp(nb * H * 32), br(4 * H, 0.1f), h0(B * H), c0(B * H);
  Aligned hs(n), cs(n), g(4 * n), hT(B * H), cT(B * H);
  for (size_t k = 0; k < A.size(); ++k) A[k] = (float)((k * 7919) % 1000) / 500.0f - 1.0f;
  for (size_t k = 0; k < Wp.size(); ++k) Wp[k] = ((float)((k * 104729) % 1000) / 500.0f - 1.0f) / 16;
  Problem P{};
  P.T = T; P.B = B; P.H = H; P.nb = nb;
  for (int q = 0; q < 4; ++q) P.A[q] = A.data() + q * n;
  P.Wp = Wp.data(); P.br = br.data(); P.h0 = h0.data(); P.c0 = c0.data();
  P.hs = hs.data(); P.cs = keep ? cs.data() : nullptr;
  for (int q = 0; q < 4; ++q) P.gates[q] = keep ? g.data() + q * n : nullptr;
  P.hT = hT.data(); P.cT = cT.data();
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    run(P, th);
    auto t1 = std::chrono::steady_clock::now();
    double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    printf("T%ld B%ld H%ld threads %ld keep %d: %.2f us/step (%.1f GFLOP/s in the product)\n",
           T, B, H, th, keep, us / T, 2.0 * B * H * 4 * H * T / us / 1e3);
  }
  return 0;
}
#endif


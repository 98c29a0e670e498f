// jrnn's weight-gradient products on the CPU, one XLA FFI custom call: out_i = d_iᵀ x_i
// (G, P_i) for one or two pairs of d_i (N, G) and x_i (N, P_i), and the column sums of each
// d_i where asked (a bias's gradient). N is the T·B rows of a sequence: jrnn/native.py's
// gradients, dW = dRᵀ H_in and dU = dAᵀ X, dR the same array as dA for the LSTM and the
// tanh cell (then read once for both).
//
// The contraction is long (N rows) and the operands narrow, the shape XLA:CPU multiplies
// slowest, and neither operand is transposed here: a tile of the output, kTileRows columns
// g of d by 32 columns p of x, is the kernels' micro-kernel (Tile) with the roles of its
// operands turned: each row k broadcasts the tile's kTileRows consecutive numbers of d's
// row k against x's 32 numbers of row k. Blocked for the cache (Goto and van de Geijn,
// "Anatomy of high-performance matrix multiplication", ACM TOMS 34(3), 2008): a chunk of
// kChunk rows of N at a time, its x copied into contiguous panels of 32 columns (in L2), and
// d's chunk, 32 columns at a time, copied into a contiguous block (in L1) that runs through
// every panel, the output tile loaded, summed in registers over the chunk, and stored. Each
// thread owns a share of d's 32-column blocks, so no two threads write the same output and
// every sum runs in the same order for any thread count. Since x's rows are copied anyway,
// the state each step read (dW's operand: h0, then the outputs shifted by one step) is read
// in place from the outputs and h0 (an "edge"), never built.
//
// The second call, out = a W (N, M) for a (N, K) and a packed W: the rows of a long a, N
// again the T·B rows, times a small weight matrix with a short contraction K (the softmax
// head's dJ/dhs = dJ/do V, K the C classes), the other shape XLA:CPU multiplies below its
// square matmul's speed.
#include <memory>

#include "common.h"

namespace jrnn_native {
namespace {

constexpr int64_t kChunk = 256;  // rows of N a pass

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

// One pair: out = dᵀ x, and sums = Σ_n d_n where sums is not null. x's N rows are x's own,
// or, where edge rows are given, the state each step of a recurrence read without building
// it (jrnn.recurrence.states_read): x the E·T rows of the outputs h_t and edge h0's E rows,
// first (left to right: h0, h_0, ..., h_{T-2}) or last (right to left: h_1, ..., h_{T-1}, h0).
struct ProductPair {
  const float* d;     // (N, G)
  const float* x;     // (N, P)
  int64_t P;
  float* out;         // (G, P)
  float* sums;        // (G,) or null
  const float* edge;  // (E, P) or null
  int64_t E;
  bool edge_first;
  const float* x_row(int64_t n, int64_t N) const {
    if (!edge) return x + n * P;
    if (edge_first) return n < E ? edge + n * P : x + (n - E) * P;
    return n < N - E ? x + (n + E) * P : edge + (n - (N - E)) * P;
  }
};

// The call: one or two pairs over the same N and G; d_shared: the second pair's d is the
// first's (copied and summed once).
struct Products {
  int64_t N, G;
  int npairs;
  bool d_shared;
  ProductPair pair[2];
};

namespace {

// tile.a[r] += sum_k d[k * ldk + r] panel[k] over K rows, the panel (K, 32) contiguous.
template <int RB>
[[gnu::flatten]] void accumulate_columns(Tile<RB, 4>& tile, const float* d, int64_t ldk,
                                         const float* panel, int64_t K) {
  constexpr int NZ = 32 / kVecLanes;
  Tile<RB, 4> t = tile;
  for (int64_t k = 0; k < K; ++k) {
    Vec w[NZ];
    static_for<NZ>([&](auto z) {
      w[z] = load_lanes<Vec>(panel + k * 32 + z * kVecLanes, kVecLanes);
    });
    static_for<RB>([&](auto r) {
      const Vec a = vec::set1<Vec>(d[k * ldk + r]);
      static_for<NZ>([&](auto z) { t.a[r][z] = vec::fmadd(a, w[z], t.a[r][z]); });
    });
  }
  tile = t;
}

struct Panel {  // 32 columns of pair i's x from p0 (fewer at its end)
  int i;
  int64_t p0, width;
};

std::vector<Panel> panels_of(const Products& Q) {
  std::vector<Panel> panels;
  for (int i = 0; i < Q.npairs; ++i)
    for (int64_t p0 = 0; p0 < Q.pair[i].P; p0 += 32)
      panels.push_back({i, p0, std::min<int64_t>(32, Q.pair[i].P - p0)});
  return panels;
}

// A thread's scratch: its copies of a chunk's panels, then d's block of each pair.
int64_t scratch_floats(const std::vector<Panel>& panels) {
  return ((int64_t)panels.size() + 2) * kChunk * 32;
}

// The 32-column blocks [gb0, gb1) of d (and so of every output), over all N rows.
void products_thread(const Products& Q, const std::vector<Panel>& panels, float* scratch,
                     int64_t gb0, int64_t gb1) {
  const int64_t N = Q.N, G = Q.G, np = (int64_t)panels.size();
  float* const blocks[2] = {scratch + np * kChunk * 32, scratch + (np + 1) * kChunk * 32};
  for (int64_t k0 = 0; k0 < N; k0 += kChunk) {
    const int64_t K = std::min(kChunk, N - k0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < np; ++j) {
        const Panel& pn = panels[j];
        const ProductPair& q = Q.pair[pn.i];
        float* dst = scratch + (j * K + k) * 32;
        std::memcpy(dst, q.x_row(k0 + k, N) + pn.p0, sizeof(float) * pn.width);
        if (pn.width < 32) std::fill(dst + pn.width, dst + 32, 0.0f);
      }
    for (int64_t gb = gb0; gb < gb1; ++gb) {
      const int64_t g0 = gb * 32, rows = std::min<int64_t>(32, G - g0);
      for (int i = 0; i < Q.npairs; ++i) {  // d's block (K, 32) of the chunk, and its sums
        if (i == 1 && Q.d_shared) break;
        const ProductPair& q = Q.pair[i];
        float* block = blocks[i];
        for (int64_t k = 0; k < K; ++k)
          std::memcpy(block + k * 32, q.d + (k0 + k) * G + g0, sizeof(float) * rows);
        if (!q.sums) continue;
        float chunk[32] = {};  // the chunk's sums, then added to the total
        for (int64_t k = 0; k < K; ++k)
          for (int64_t g = 0; g < rows; ++g) chunk[g] += block[k * 32 + g];
        for (int64_t g = 0; g < rows; ++g)
          q.sums[g0 + g] = (k0 > 0 ? q.sums[g0 + g] : 0.0f) + chunk[g];
      }
      for (int64_t j = 0; j < np; ++j) {
        const Panel& pn = panels[j];
        const ProductPair& q = Q.pair[pn.i];
        const float* block = blocks[Q.d_shared ? 0 : pn.i];
        const float* panel = scratch + j * K * 32;
        over_row_tiles(rows, [&](auto RB, int64_t r0) {
          Tile<RB, 4> acc;
          acc.zero();
          accumulate_columns(acc, block + r0, 32, panel, K);
          static_for<RB>([&](auto r) {
            static_for<4>([&](auto v) {
              if (v * 8 >= pn.width) return;
              float* o = q.out + (g0 + r0 + r) * q.P + pn.p0 + v * 8;
              const int n = (int)std::min<int64_t>(8, pn.width - v * 8);
              const __m256 a = acc.template part<r, v>();
              store_n(o, k0 > 0 ? _mm256_add_ps(a, load_n(o, n)) : a, n);
            });
          });
        });
      }
    }
  }
}

}  // namespace

// False where the threads' scratch could not be allocated (nothing written then).
bool transposed_products(const Products& Q, int64_t threads) {
  if (Q.N == 0) {
    for (int i = 0; i < Q.npairs; ++i) {
      const ProductPair& q = Q.pair[i];
      std::fill(q.out, q.out + Q.G * q.P, 0.0f);
      if (q.sums) std::fill(q.sums, q.sums + Q.G, 0.0f);
    }
    return true;
  }
  const int64_t nblocks = (Q.G + 31) / 32;
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, nblocks));
  const std::vector<Panel> panels = panels_of(Q);
  const int64_t per_thread = scratch_floats(panels);  // a multiple of 16 floats (64 bytes)
  std::unique_ptr<float[], FreeDeleter> scratch(
      (float*)std::aligned_alloc(64, sizeof(float) * n * per_thread));
  if (!scratch) return false;
  on_threads(n, [&](Barrier&, int64_t k) {
    products_thread(Q, panels, scratch.get() + k * per_thread, nblocks * k / n,
                    nblocks * (k + 1) / n);
  });
  return true;
}

namespace {

ffi::Error TransposedProducts(ffi::Buffer<ffi::F32> d1, ffi::Buffer<ffi::F32> x1,
                              ffi::Buffer<ffi::F32> edge1, ffi::Buffer<ffi::F32> d2,
                              ffi::Buffer<ffi::F32> x2, ffi::Buffer<ffi::F32> edge2,
                              ffi::ResultBuffer<ffi::F32> out1, ffi::ResultBuffer<ffi::F32> out2,
                              ffi::ResultBuffer<ffi::F32> sums1, ffi::ResultBuffer<ffi::F32> sums2,
                              int64_t pairs, bool d_shared, bool with_sums1, bool with_sums2,
                              bool edge1_first, bool edge2_first, int64_t threads) {
  auto dd = d1.dimensions();
  if (dd.size() != 2) return ffi::Error::InvalidArgument("d: expected (N, G)");
  if (pairs != 1 && pairs != 2) return ffi::Error::InvalidArgument("pairs: expected 1 or 2");
  Products Q{};
  Q.N = dd[0]; Q.G = dd[1]; Q.npairs = (int)pairs; Q.d_shared = d_shared;
  const ffi::Buffer<ffi::F32>* ds[2] = {&d1, d_shared ? &d1 : &d2};
  const ffi::Buffer<ffi::F32>* xs[2] = {&x1, &x2};
  const ffi::Buffer<ffi::F32>* edges[2] = {&edge1, &edge2};
  const bool edge_first[2] = {edge1_first, edge2_first};
  ffi::ResultBuffer<ffi::F32>* outs[2] = {&out1, &out2};
  ffi::ResultBuffer<ffi::F32>* sums[2] = {&sums1, &sums2};
  const bool with_sums[2] = {with_sums1, with_sums2 && !d_shared};
  for (int i = 0; i < Q.npairs; ++i) {
    auto di = ds[i]->dimensions(), xd = xs[i]->dimensions();
    if (di.size() != 2 || di[0] != Q.N || di[1] != Q.G)
      return ffi::Error::InvalidArgument("d: expected (N, G), the same for both pairs");
    if (xd.size() != 2 || xd[0] != Q.N)
      return ffi::Error::InvalidArgument("x: expected (N, P), N the rows of d");
    ProductPair& q = Q.pair[i];
    q.d = ds[i]->typed_data(); q.x = xs[i]->typed_data(); q.P = xd[1];
    if (edges[i]->element_count() > 0) {  // the states read: x's rows shifted by E
      auto ed = edges[i]->dimensions();
      if (ed.size() != 2 || ed[1] != q.P || ed[0] > Q.N)
        return ffi::Error::InvalidArgument("edge: expected (E, P), E at most N, P x's");
      q.edge = edges[i]->typed_data(); q.E = ed[0]; q.edge_first = edge_first[i];
    }
    q.out = (*outs[i])->typed_data();
    if ((int64_t)(*outs[i])->element_count() != Q.G * q.P)
      return ffi::Error::InvalidArgument("out: expected (G, P)");
    if (with_sums[i] && (int64_t)(*sums[i])->element_count() != Q.G)
      return ffi::Error::InvalidArgument("sums: expected (G,)");
    q.sums = with_sums[i] ? (*sums[i])->typed_data() : nullptr;
  }
  if (!transposed_products(Q, threads))
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "no memory for the products' scratch");
  return ffi::Error::Success();
}

// out = a W for the N rows of a (N, K) and W packed (ceil(M/32), K, 32) (M columns): blocks
// of kRowBlock rows split over the threads, each block (in L1/L2) through every panel of W
// (in L2) by the kernels' micro-kernel. Every output row is one thread's, summed in one
// order for any thread count.
void rows_times_weights(const float* a, int64_t N, int64_t K, const float* wp, int64_t M,
                        float* out, int64_t threads, const FreshOutputs* fresh) {
  constexpr int64_t kRowBlock = 64, kMinRowsPerThread = 256;
  const int64_t nblocks = (N + kRowBlock - 1) / kRowBlock, npanels = (M + 31) / 32;
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, N / kMinRowsPerThread));
  on_block_shares(threads, nblocks, [&](Barrier&, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * kRowBlock, rows = std::min(kRowBlock, N - r0);
      rows_times_panels(a + r0 * K, K, rows, wp, K, 0, npanels, out + r0 * M, M, M, false);
    }
  }, fresh);
}

ffi::Error RowsTimesWeights(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> wp,
                            ffi::ResultBuffer<ffi::F32> out, int64_t threads) {
  auto ad = a.dimensions(), od = out->dimensions();
  if (ad.size() != 2) return ffi::Error::InvalidArgument("a: expected (N, K)");
  if (od.size() != 2 || od[0] != ad[0])
    return ffi::Error::InvalidArgument("out: expected (N, M), N the rows of a");
  const int64_t N = ad[0], K = ad[1], M = od[1];
  if (auto e = check_panel(wp, "W", (M + 31) / 32, K, "K", 32, "ceil(M/32)", "32"); e.failure())
    return e;
  FreshOutputs fresh;
  fresh.add(out);
  rows_times_weights(a.typed_data(), N, K, wp.typed_data(), M, out->typed_data(), threads,
                     &fresh);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jrnn_native

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRowsTimesWeights, jrnn_native::RowsTimesWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a (N, K)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W packed (ceil(M/32), K, 32)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // a W (N, M)
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnTransposedProducts, jrnn_native::TransposedProducts,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d1 (N, G)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x1 (N, P1)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x1's edge (E, P1), or (0,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d2 (N, G), or (0,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x2 (N, P2), or (0,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x2's edge (E, P2), or (0,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d1ᵀ x1 (G, P1)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d2ᵀ x2 (G, P2), or (0,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d1's column sums, or (0,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d2's column sums, or (0,)
                                  .Attr<int64_t>("pairs")
                                  .Attr<bool>("d_shared")
                                  .Attr<bool>("with_sums1")
                                  .Attr<bool>("with_sums2")
                                  .Attr<bool>("edge1_first")
                                  .Attr<bool>("edge2_first")
                                  .Attr<int64_t>("threads"));

#ifdef JRNN_NATIVE_BENCH_MAIN
// A standalone timing harness (not part of the library): g++ -DJRNN_NATIVE_BENCH_MAIN ...
// products.cc -o bench; ./bench N G P1 P2 threads (P2 0: one operand)
#include <chrono>
#include <cstdio>
int main(int argc, char** argv) {
  const int64_t N = atoi(argv[1]), G = atoi(argv[2]), P1 = atoi(argv[3]), P2 = atoi(argv[4]);
  const int64_t th = atoi(argv[5]);
  auto alloc = [](size_t n) {
    float* p = (float*)std::aligned_alloc(64, (n * 4 + 63) / 64 * 64 + 64);
    for (size_t k = 0; k < n; ++k) p[k] = (float)((k * 7919) % 1000) / 500.0f - 1.0f;
    return p;
  };
  float *d = alloc(N * G), *x1 = alloc(N * P1), *x2 = alloc(N * P2);
  float *o1 = alloc(G * P1), *o2 = alloc(G * P2), *sums = alloc(G);
  jrnn_native::Products Q{N, G, P2 > 0 ? 2 : 1, true,
                          {{d, x1, P1, o1, sums, nullptr, 0, false},
                           {d, x2, P2, o2, nullptr, nullptr, 0, false}}};
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    jrnn_native::transposed_products(Q, th);
    auto t1 = std::chrono::steady_clock::now();
    double us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    printf("N%ld G%ld P%ld+%ld threads %ld: %.3f ms, %.1f GFLOP/s\n", N, G, P1, P2, th,
           us / 1e3, 2.0 * N * G * (P1 + P2) / us / 1e3);
  }
  double s = 0, c = 0;  // one entry, and one column sum, against double sums
  for (int64_t n = 0; n < N; ++n) {
    s += (double)x1[n * P1 + P1 - 1] * d[n * G + G - 1];
    c += d[n * G + G - 1];
  }
  printf("check %g vs %g, %g vs %g\n", s, o1[(G - 1) * P1 + P1 - 1], c, sums[G - 1]);
  return 0;
}
#endif

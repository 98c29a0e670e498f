// Shared by jrnn's native CPU kernels (lstm.cc, gru.cc, elman.cc): accurate float32
// transcendental functions on 8 lanes, a reusable barrier, the threads of one call and their
// shares of the hidden units, partial-vector loads, the panel product of the reverse loops
// (and of the tanh cell's forward), and the outputs' huge-page hint and prefault.
#pragma once

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace jrnn_native {

// ---- accurate float32 transcendental functions, 8 lanes ----

// exp: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), ~1 ulp.
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i n = _mm256_cvttps_epi32(fx);
  n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(0x7f)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// sigmoid(x) = 1 / (1 + exp(-x)), exact division.
inline __m256 sigmoid8(__m256 x) {
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// tanh: Eigen's rational approximation (the one XLA uses for float32), clamped; x itself
// below 0.0004.
inline __m256 tanh8(__m256 a) {
  const __m256 clamp = _mm256_set1_ps(7.90531110763549805f);
  const __m256 x = _mm256_max_ps(_mm256_min_ps(a, clamp), _mm256_sub_ps(_mm256_setzero_ps(), clamp));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
  p = _mm256_mul_ps(p, x);
  __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));
  const __m256 r = _mm256_div_ps(p, q);
  const __m256 absa = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a);
  const __m256 tiny = _mm256_cmp_ps(absa, _mm256_set1_ps(0.0004f), _CMP_LT_OQ);
  return _mm256_blendv_ps(r, a, tiny);
}

// ---- a reusable barrier (sense reversal): spins, then sleeps on a futex ----
// Spinning alone collapses when the machine is oversubscribed (measured: the training step
// 1.7x slower with two threads than with one beside another process's two); after a short
// spin a waiter sleeps (std::atomic::wait), and the last to arrive wakes the sleepers only
// if there are any.
struct Barrier {
  explicit Barrier(int n) : n(n) {}
  void wait(int& local_sense) {
    local_sense ^= 1;
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      // seq_cst on both sides (store then load here, add then load in a waiter): otherwise
      // each could miss the other's write and a sleeper never be woken
      sense.store(local_sense, std::memory_order_seq_cst);
      if (sleepers.load(std::memory_order_seq_cst) > 0) sense.notify_all();
    } else {
      for (int spins = 0; spins < 1000; ++spins) {
        if (sense.load(std::memory_order_acquire) == local_sense) return;
        _mm_pause();
      }
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      int seen;
      while ((seen = sense.load(std::memory_order_seq_cst)) != local_sense) sense.wait(seen);
      sleepers.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  const int n;
  alignas(64) std::atomic<int> count{0};
  alignas(64) std::atomic<int> sense{0};
  alignas(64) std::atomic<int> sleepers{0};
};

// Runs body(barrier, k) for k = 0 .. n-1, k = 0 on the calling thread, each thread pinned to
// its own CPU of the caller's set for the call (the caller's mask restored after): a thread
// started on the caller's CPU otherwise waits for the scheduler to move it, and with a
// barrier per step the whole call waits with it (measured: calls of a few ms ran 1-3x
// slower, at random).
template <class Body>
void on_threads(int64_t n, Body body) {
  Barrier bar((int)n);
  cpu_set_t mask;
  std::vector<int> cpus;
  const bool pin = n > 1 && pthread_getaffinity_np(pthread_self(), sizeof(mask), &mask) == 0;
  if (pin)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &mask)) cpus.push_back(c);
  auto pin_to = [&](int64_t k) {
    if (!pin || (int64_t)cpus.size() < n) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[k], &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
  };
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < n; ++k)
    pool.emplace_back([&, k] { pin_to(k); body(bar, k); });
  pin_to(0);
  body(bar, 0);
  for (auto& th : pool) th.join();
  if (pin) pthread_setaffinity_np(pthread_self(), sizeof(mask), &mask);
}

// Asks Linux to back [p, p + bytes) with transparent huge pages (madvise MADV_HUGEPAGE on the
// 2 MiB-aligned interior; a hint, without effect where THP is off). The outputs are fresh
// buffers of tens of MiB, and the loops' first writes otherwise fault every 4 KiB page:
// measured, half of the GRU's reverse loop at X. JRNN_NATIVE_HUGE_PAGES=0 turns it off.
inline void prefer_huge_pages(void* p, size_t bytes) {
  static const bool wanted = [] {
    const char* v = std::getenv("JRNN_NATIVE_HUGE_PAGES");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  const uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  const uintptr_t e = ((uintptr_t)p + bytes) & ~(huge - 1);
  if (wanted && e > a) madvise((void*)a, e - a, MADV_HUGEPAGE);
}

// prefer_huge_pages for an FFI result.
inline void prefer_huge_pages(ffi::ResultBuffer<ffi::F32>& r) {
  prefer_huge_pages(r->typed_data(), sizeof(float) * r->element_count());
}

// A call's output buffers, often fresh memory that XLA has just mapped: the first write to
// each page faults and the kernel zeroes the page. Inside the loops that fault stalls the one
// thread that takes it while the others wait at the step's barrier; touch(k, n) instead
// faults in share k of n of the pages up front, on all threads at once (madvise's
// MADV_POPULATE_WRITE measured slower: benchmarks/NOTES.md). A thread may already be
// writing its first step into another's share, so each page is touched by an atomic add of
// zero: a write access that faults the page but cannot overwrite a value.
struct FreshOutputs {
  std::vector<std::pair<char*, size_t>> ranges;
  void add(void* p, size_t bytes) { if (bytes) ranges.emplace_back((char*)p, bytes); }
  // An FFI result, after asking for huge pages for it; JRNN_NATIVE_PREFAULT=0 leaves its
  // pages to fault in the loop.
  void add(ffi::ResultBuffer<ffi::F32>& r) {
    prefer_huge_pages(r);
    const char* v = std::getenv("JRNN_NATIVE_PREFAULT");
    if (!(v && std::strcmp(v, "0") == 0))
      add(r->typed_data(), sizeof(float) * r->element_count());
  }
  void touch(int64_t k, int64_t n) const {
    const uintptr_t page = 4096;
    for (auto [p, bytes] : ranges) {
      const uintptr_t first = ((uintptr_t)p + page - 1) & ~(page - 1);
      const uintptr_t end = (uintptr_t)p + bytes;
      if (end <= first) continue;
      const uintptr_t pages = (end - first + page - 1) / page;
      const uintptr_t q0 = pages * k / n, q1 = pages * (k + 1) / n;
      for (uintptr_t q = q0; q < q1; ++q)
        __atomic_fetch_add((int*)(first + q * page), 0, __ATOMIC_RELAXED);
    }
  }
};

// Runs body(barrier, b0, b1) on min(threads, nblocks) threads (on_threads), each given a
// contiguous share [b0, b1) of nblocks blocks of hidden units, after touching its share of
// ``fresh``'s pages.
template <class Body>
void on_block_shares(int64_t threads, int64_t nblocks, Body body,
                     const FreshOutputs* fresh = nullptr) {
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, nblocks));
  on_threads(n, [&](Barrier& bar, int64_t k) {
    if (fresh) fresh->touch(k, n);
    body(bar, nblocks * k / n, nblocks * (k + 1) / n);
  });
}

// Loads n <= 8 floats (the rest zero) / stores the first n lanes.
inline __m256 load_n(const float* p, int n) {
  if (n == 8) return _mm256_loadu_ps(p);
  alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(tmp, p, sizeof(float) * n);
  return _mm256_load_ps(tmp);
}
inline void store_n(float* p, __m256 v, int n) {
  if (n == 8) { _mm256_storeu_ps(p, v); return; }
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * n);
}


// out[r][v] (+)= sum_k rows[r][k] panel[k][v] for RB <= 3 rows (row stride ld), K entries
// each, and the 32 columns v of a panel (K, 32); only the first n_out columns are written
// (row stride ldo). The reverse loops' dh_{t-1} = dz W for one block of 32 units of h.
template <int RB>
inline void rows_times_panel(const float* rows, int64_t ld, const float* panel, int64_t K,
                             float* out, int64_t ldo, int64_t n_out, bool add) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
  __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
  __m256 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
  const float* p0 = rows;
  const float* p1 = RB > 1 ? p0 + ld : p0;
  const float* p2 = RB > 2 ? p0 + 2 * ld : p0;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * 32);
    const __m256 w1 = _mm256_loadu_ps(panel + k * 32 + 8);
    const __m256 w2 = _mm256_loadu_ps(panel + k * 32 + 16);
    const __m256 w3 = _mm256_loadu_ps(panel + k * 32 + 24);
    const __m256 x0 = _mm256_broadcast_ss(p0 + k);
    a00 = _mm256_fmadd_ps(x0, w0, a00); a01 = _mm256_fmadd_ps(x0, w1, a01);
    a02 = _mm256_fmadd_ps(x0, w2, a02); a03 = _mm256_fmadd_ps(x0, w3, a03);
    if (RB > 1) {
      const __m256 x1 = _mm256_broadcast_ss(p1 + k);
      a10 = _mm256_fmadd_ps(x1, w0, a10); a11 = _mm256_fmadd_ps(x1, w1, a11);
      a12 = _mm256_fmadd_ps(x1, w2, a12); a13 = _mm256_fmadd_ps(x1, w3, a13);
    }
    if (RB > 2) {
      const __m256 x2 = _mm256_broadcast_ss(p2 + k);
      a20 = _mm256_fmadd_ps(x2, w0, a20); a21 = _mm256_fmadd_ps(x2, w1, a21);
      a22 = _mm256_fmadd_ps(x2, w2, a22); a23 = _mm256_fmadd_ps(x2, w3, a23);
    }
  }
  const __m256 acc[3][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}};
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < 4 && v * 8 < n_out; ++v) {
      float* o = out + r * ldo + v * 8;
      const int n = (int)std::min<int64_t>(8, n_out - v * 8);
      store_n(o, add ? _mm256_add_ps(acc[r][v], load_n(o, n)) : acc[r][v], n);
    }
}

// rows_times_panel over all B rows, three at a time.
inline void all_rows_times_panel(const float* rows, int64_t ld, int64_t B, const float* panel,
                                 int64_t K, float* out, int64_t ldo, int64_t n_out, bool add) {
  int64_t r = 0;
  for (; r + 3 <= B; r += 3)
    rows_times_panel<3>(rows + r * ld, ld, panel, K, out + r * ldo, ldo, n_out, add);
  if (B - r == 2) rows_times_panel<2>(rows + r * ld, ld, panel, K, out + r * ldo, ldo, n_out, add);
  else if (B - r == 1) rows_times_panel<1>(rows + r * ld, ld, panel, K, out + r * ldo, ldo, n_out, add);
}

}  // namespace jrnn_native

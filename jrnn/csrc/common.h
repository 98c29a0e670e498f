// Shared by jrnn's native CPU kernels (lstm.cc, gru.cc, elman.cc, head.cc, products.cc):
// accurate float32 transcendental functions on 8 or 16 lanes, a reusable barrier, the
// threads of a call (kept between calls) and their shares of the hidden units,
// partial-vector loads, the panel product of every kernel, and the outputs' huge-page hint
// and prefault.
#pragma once

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace jrnn_native {

// ---- lane-generic arithmetic: V is __m256 (8 lanes), or __m512 (16) in the AVX-512 build ----
namespace vec {
template <class V> V set1(float a);
template <> inline __m256 set1<__m256>(float a) { return _mm256_set1_ps(a); }
inline __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
inline __m256 sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
inline __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256 div(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
inline __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256 fnmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
inline __m256 min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
inline __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
inline __m256 floor(__m256 a) { return _mm256_floor_ps(a); }
inline __m256 abs(__m256 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
// 2^n for integral n held as floats (the exponent field built directly)
inline __m256 pow2(__m256 n) {
  const __m256i e = _mm256_cvttps_epi32(n);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(0x7f)), 23));
}
// where a < b (ordered): x, else y
inline __m256 where_less(__m256 a, __m256 b, __m256 x, __m256 y) {
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
// whether any lane is NaN; the largest lane (of lanes without NaN); the sum of the lanes
inline bool any_nan(__m256 a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }
inline float max_lane(__m256 a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}
inline float sum_lanes(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#ifdef __AVX512F__
template <> inline __m512 set1<__m512>(float a) { return _mm512_set1_ps(a); }
inline __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
inline __m512 sub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
inline __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
inline __m512 div(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
inline __m512 fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline __m512 fnmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
inline __m512 min(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
inline __m512 max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
inline __m512 floor(__m512 a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
}
inline __m512 abs(__m512 a) { return _mm512_abs_ps(a); }
inline __m512 pow2(__m512 n) {
  const __m512i e = _mm512_cvttps_epi32(n);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(0x7f)), 23));
}
inline __m512 where_less(__m512 a, __m512 b, __m512 x, __m512 y) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
inline bool any_nan(__m512 a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
inline float max_lane(__m512 a) {
  return max_lane(_mm256_max_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)));
}
inline float sum_lanes(__m512 a) {
  return sum_lanes(_mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)));
}
#endif
}  // namespace vec

// ---- accurate float32 transcendental functions, on every lane alike ----

// exp: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), ~1 ulp.
template <class V>
inline V vexp(V x) {
  using namespace vec;
  x = max(min(x, set1<V>(88.3762626647949f)), set1<V>(-88.3762626647949f));
  const V fx = floor(fmadd(x, set1<V>(1.44269504088896341f), set1<V>(0.5f)));
  x = fnmadd(fx, set1<V>(0.693359375f), x);
  x = fnmadd(fx, set1<V>(-2.12194440e-4f), x);
  const V z = mul(x, x);
  V y = set1<V>(1.9875691500E-4f);
  y = fmadd(y, x, set1<V>(1.3981999507E-3f));
  y = fmadd(y, x, set1<V>(8.3334519073E-3f));
  y = fmadd(y, x, set1<V>(4.1665795894E-2f));
  y = fmadd(y, x, set1<V>(1.6666665459E-1f));
  y = fmadd(y, x, set1<V>(5.0000001201E-1f));
  y = fmadd(y, z, x);
  y = add(y, set1<V>(1.0f));
  return mul(y, pow2(fx));
}

// sigmoid(x) = 1 / (1 + exp(-x)), exact division.
template <class V>
inline V vsigmoid(V x) {
  using namespace vec;
  const V e = vexp(sub(set1<V>(0.0f), x));
  return div(set1<V>(1.0f), add(set1<V>(1.0f), e));
}

// tanh: Eigen's rational approximation (the one XLA uses for float32), clamped; x itself
// below 0.0004.
template <class V>
inline V vtanh(V a) {
  using namespace vec;
  const V clamp = set1<V>(7.90531110763549805f);
  const V x = max(min(a, clamp), sub(set1<V>(0.0f), clamp));
  const V x2 = mul(x, x);
  V p = set1<V>(-2.76076847742355e-16f);
  p = fmadd(p, x2, set1<V>(2.00018790482477e-13f));
  p = fmadd(p, x2, set1<V>(-8.60467152213735e-11f));
  p = fmadd(p, x2, set1<V>(5.12229709037114e-08f));
  p = fmadd(p, x2, set1<V>(1.48572235717979e-05f));
  p = fmadd(p, x2, set1<V>(6.37261928875436e-04f));
  p = fmadd(p, x2, set1<V>(4.89352455891786e-03f));
  p = mul(p, x);
  V q = set1<V>(1.19825839466702e-06f);
  q = fmadd(q, x2, set1<V>(1.18534705686654e-04f));
  q = fmadd(q, x2, set1<V>(2.26843463243900e-03f));
  q = fmadd(q, x2, set1<V>(4.89352518554385e-03f));
  return where_less(abs(a), set1<V>(0.0004f), a, div(p, q));
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

// The CPUs this thread may run on, in order.
inline std::vector<int> allowed_cpus() {
  cpu_set_t mask;
  std::vector<int> cpus;
  if (pthread_getaffinity_np(pthread_self(), sizeof(mask), &mask) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &mask)) cpus.push_back(c);
  return cpus;
}

inline void pin_to_cpu(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
}

// Threads kept between calls. Starting a thread and pinning it costs more than many calls'
// work (measured on the 2-core VM: 140 us a call with one helper thread, 59 without the
// pinning; benchmarks/NOTES.md), so helper k (1, 2, ...) is started once, pinned once to
// the k-th CPU of the caller's set (none past the last CPU), and sleeps between calls on a
// futex after a short spin. A pool serves the process, the CPU set and the thread count it
// was made for; one call at a time holds it, and a call that finds it busy (XLA running two
// kernels at once) starts its own threads as before, as does every call under
// JRNN_NATIVE_POOL=0.
class Pool {
 public:
  using Run = void (*)(void*, Barrier&, int64_t);
  Pool(std::vector<int> cpus, int64_t n) : cpus(std::move(cpus)), n(n), pid(getpid()) {
    for (int64_t k = 1; k < n; ++k) std::thread([this, k] { serve(k); }).detach();
  }
  // Runs run(ctx, bar, k) for k = 0 .. n-1, k = 0 here.
  void run(Run f, void* ctx, Barrier& bar) {
    job = {f, ctx, &bar};
    remaining.store(n - 1, std::memory_order_relaxed);
    generation.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) generation.notify_all();
    f(ctx, bar, 0);
    for (int spins = 0; remaining.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 4000) {
        _mm_pause();
      } else {
        const int left = remaining.load(std::memory_order_acquire);
        if (left > 0) remaining.wait(left);
      }
    }
  }
  // Whether this call may run on the pool: it is free and not retired.
  bool acquire() {
    if (!busy.try_lock()) return false;
    if (!stop.load(std::memory_order_relaxed)) return true;
    busy.unlock();
    return false;
  }
  void release() { busy.unlock(); }
  // Tells the helpers to end; the caller holds busy.
  void retire() {
    stop.store(true, std::memory_order_relaxed);
    generation.fetch_add(1, std::memory_order_seq_cst);
    generation.notify_all();
  }
  const std::vector<int> cpus;
  const int64_t n;
  const pid_t pid;
  std::mutex busy;  // held by the call that runs on the pool

 private:
  struct Job { Run f; void* ctx; Barrier* bar; };
  void serve(int64_t k) {
    if (k < (int64_t)cpus.size()) pin_to_cpu(cpus[k]);
    uint32_t seen = 0;
    for (;;) {
      uint32_t now;
      for (int spins = 0; (now = generation.load(std::memory_order_acquire)) == seen; ++spins) {
        if (spins < 1000) {
          _mm_pause();
        } else {
          sleepers.fetch_add(1, std::memory_order_seq_cst);
          while ((now = generation.load(std::memory_order_seq_cst)) == seen) generation.wait(seen);
          sleepers.fetch_sub(1, std::memory_order_acq_rel);
          break;
        }
      }
      seen = now;
      if (stop.load(std::memory_order_relaxed)) return;
      job.f(job.ctx, *job.bar, k);
      if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) remaining.notify_one();
    }
  }
  Job job{};
  alignas(64) std::atomic<uint32_t> generation{0};
  alignas(64) std::atomic<int> remaining{0};
  alignas(64) std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
};

// The pool for n threads on these CPUs in this process: made on first use, replaced (its
// helpers told to end) when a call asks for another one. Pools are never destroyed, so that
// no helper outlives its pool at exit; a child process after fork() makes its own.
inline Pool* pool_for(const std::vector<int>& cpus, int64_t n) {
  static std::mutex guard;
  static Pool* current = nullptr;
  std::lock_guard<std::mutex> lock(guard);
  if (current && current->n == n && current->cpus == cpus && current->pid == getpid())
    return current;
  if (current && current->pid == getpid()) {
    if (!current->acquire()) return nullptr;  // in use: this call starts its own threads
    current->retire();
    current->release();
  }
  current = new Pool(cpus, n);
  return current;
}

// Runs body(barrier, k) for k = 0 .. n-1, k = 0 on the calling thread, each thread pinned to
// its own CPU of the caller's set (the caller for the call only, its mask restored after): a
// thread started on the caller's CPU otherwise waits for the scheduler to move it, and with a
// barrier per step the whole call waits with it (measured: calls of a few ms ran 1-3x
// slower, at random). The helpers are the Pool's where it is free, else started here.
template <class Body>
void on_threads(int64_t n, Body body) {
  Barrier bar((int)n);
  if (n == 1) {
    body(bar, 0);
    return;
  }
  const std::vector<int> cpus = allowed_cpus();
  cpu_set_t mask;
  const bool pin = (int64_t)cpus.size() >= n &&
                   pthread_getaffinity_np(pthread_self(), sizeof(mask), &mask) == 0;
  if (pin) pin_to_cpu(cpus[0]);
  const char* keep = std::getenv("JRNN_NATIVE_POOL");
  Pool* pool = keep && std::strcmp(keep, "0") == 0 ? nullptr : pool_for(cpus, n);
  if (pool && pool->acquire()) {
    pool->run([](void* b, Barrier& bar, int64_t k) { (*static_cast<Body*>(b))(bar, k); },
              &body, bar);
    pool->release();
  } else {
    std::vector<std::thread> helpers;
    for (int64_t k = 1; k < n; ++k)
      helpers.emplace_back([&, k] {
        if (pin) pin_to_cpu(cpus[k]);
        body(bar, k);
      });
    body(bar, 0);
    for (auto& th : helpers) th.join();
  }
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

// A thread's share of a recurrence: the batch rows [b0, b1) and the unit blocks [kb0, kb1).
struct Share {
  int64_t b0, b1, kb0, kb1;
};

// The fewest batch rows each thread must get for the threads to split the rows rather than
// the units (measured, benchmarks/NOTES.md, 2026-12-07, night, and 2026-12-08). The loops,
// forward and reverse, gain from 4 rows a thread (B 8 on two threads) up: a thread with
// its own rows never waits at a barrier, which is worth more than reading every unit
// block's weights for its own rows alone (the forwards 1.02-1.29x at B 8-32, measured after
// tiles of at most 4 rows took two blocks at a time; at 2 rows a thread the gated cells'
// lost 11-35%). The sampler, two barriers a step where the units are split,
// gained from 16 (B 32) and lost 3-10% of the GRU's and LSTM's at 4 (B 8).
constexpr int64_t kLoopMinRows = 4, kSamplerMinRows = 16;

// Runs body(barrier, share) for a recurrence over B rows and nblocks blocks of units. The
// rows of a batch never meet, so where at least two threads get min_rows rows each, and no
// fewer threads than a split of the units would use (a machine with more cores than the
// batch has shares of rows keeps them all busy on the units), the threads split the rows:
// each runs the whole recurrence on its own rows, every unit, and never waits for another
// (its barrier counts one thread). Otherwise they split the unit blocks as on_block_shares
// does and wait at the barrier every step. Each row's numbers are the same either way: a
// row's sums run in one order whatever the share.
template <class Body>
void on_recurrence_shares(int64_t threads, int64_t B, int64_t min_rows, int64_t nblocks,
                          Body body, const FreshOutputs* fresh = nullptr) {
  const int64_t by_rows = std::min<int64_t>(threads, B / min_rows);
  const int64_t by_units = std::max<int64_t>(1, std::min<int64_t>(threads, nblocks));
  if (by_rows < 2 || by_rows < by_units) {
    on_block_shares(threads, nblocks, [&](Barrier& bar, int64_t kb0, int64_t kb1) {
      body(bar, Share{0, B, kb0, kb1});
    }, fresh);
    return;
  }
  on_threads(by_rows, [&](Barrier&, int64_t k) {
    if (fresh) fresh->touch(k, by_rows);
    Barrier alone(1);
    body(alone, Share{B * k / by_rows, B * (k + 1) / by_rows, 0, nblocks});
  });
}

// A packed panel operand (nblocks, K, width), width floats per panel row (G gates x 8
// units, or 32 units); the error names it, with its expected layout
// ("packed W: expected (<blocks>, H, <row>)").
inline ffi::Error check_panel(const ffi::Buffer<ffi::F32>& p, const char* name, int64_t nblocks,
                              int64_t K, const char* k_name, int64_t width, const char* blocks,
                              const char* row) {
  if ((int64_t)p.element_count() != nblocks * K * width)
    return ffi::Error::InvalidArgument(std::string("packed ") + name + ": expected (" + blocks +
                                       ", " + k_name + ", " + row + ")");
  return ffi::Error::Success();
}

// The packed U (nblocks, D, width) and W (nblocks, H, width) of a forward call.
inline ffi::Error check_packed(const ffi::Buffer<ffi::F32>& up, const ffi::Buffer<ffi::F32>& wp,
                               int64_t nblocks, int64_t D, int64_t H, int64_t width,
                               const char* blocks, const char* row) {
  if (auto e = check_panel(wp, "W", nblocks, H, "H", width, blocks, row); e.failure()) return e;
  return check_panel(up, "U", nblocks, D, "D", width, blocks, row);
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


// ---- the pointwise math of V's rows at once: V = __m256 holds one row's 8 lanes, __m512
// (AVX-512 build) two rows', row r in the lower half and r + 1 in the upper, so that the gate
// math of a row tile runs 16 lanes to an instruction. Rows are `stride` floats apart.
template <class V>
constexpr int kRowsIn = sizeof(V) / sizeof(__m256);

template <class V>
inline V pair(__m256 lower, [[maybe_unused]] __m256 upper) {
  if constexpr (kRowsIn<V> == 1) return lower;
#ifdef __AVX512F__
  else return _mm512_insertf32x8(_mm512_castps256_ps512(lower), upper, 1);
#endif
}
template <class V>
inline V load_rows(const float* p, [[maybe_unused]] int64_t stride, int n) {
  if constexpr (kRowsIn<V> == 1) return load_n(p, n);
  else return pair<V>(load_n(p, n), load_n(p + stride, n));
}
template <class V>
inline void store_rows(float* p, [[maybe_unused]] int64_t stride, V v, int n) {
  if constexpr (kRowsIn<V> == 1) {
    store_n(p, v, n);
  } else {
#ifdef __AVX512F__
    store_n(p, _mm512_castps512_ps256(v), n);
    store_n(p + stride, _mm512_extractf32x8_ps(v, 1), n);
#endif
  }
}

// n <= lanes of V consecutive floats at p (the rest zero) / the first n lanes of v to p.
template <class V>
inline V load_lanes(const float* p, int n) {
  if constexpr (sizeof(V) == 32) return load_n(p, n);
#ifdef __AVX512F__
  else return n == 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#endif
}
template <class V>
inline void store_lanes(float* p, V v, int n) {
  if constexpr (sizeof(V) == 32) {
    store_n(p, v, n);
  } else {
#ifdef __AVX512F__
    if (n == 16) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
#endif
  }
}

// f.template operator()<V>(u, n) over the units [u0, u1) of a row, n = u1 - u or fewer at a
// time: 16 to a vector in the AVX-512 build, else 8.
template <class F>
inline void over_lanes(int64_t u0, int64_t u1, F&& f) {
#ifdef __AVX512F__
  using V = __m512;
#else
  using V = __m256;
#endif
  constexpr int L = sizeof(V) / 4;
  for (int64_t u = u0; u < u1; u += L)
    f.template operator()<V>(u, (int)std::min<int64_t>(L, u1 - u));
}

// f.template operator()<V>(r) for the rows r of a tile of RB, two at a time where AVX-512 is
// built (then one for an odd last row): a plain loop, not unrolled (see the panel product).
template <int RB, class F>
inline void over_row_pairs(F&& f) {
  int r = 0;
#ifdef __AVX512F__
#pragma GCC unroll 1
  for (; r + 2 <= RB; r += 2) f.template operator()<__m512>(r);
#endif
#pragma GCC unroll 1
  for (; r < RB; ++r) f.template operator()<__m256>(r);
}

// ---- the panel product: RB rows of an operand times a packed panel ----
//
// Every product of the kernels has one shape: RB rows of a row-major operand (row stride ld)
// times a panel (K, NV * 8), NV groups of 8 columns side by side in each of its K rows (the
// gates of 8 hidden units, or 32 output units), summed over k into a Tile of accumulators
// held in registers. With AVX-512 (the library built with -mavx512f, where the CPU has it)
// the 32 columns of a row are two 16-lane registers and a tile takes up to 8 rows, so a
// panel is read once per 8 rows instead of once per 3, with half the instructions per FMA;
// with AVX2 four 8-lane registers and up to 3 rows. Indices into a tile are compile-time
// constants throughout (static_for), and accumulate() sums into a local copy: a tile whose
// address is taken is kept in memory by GCC and stored at every k, since a float load
// from `rows` may alias it (measured: the S forward step 1.8x slower). accumulate() is
// flattened: in a large caller (the samplers) GCC's inliner otherwise stops at a static_for
// lambda, and the sums go through memory at every k all the same. Callers take the
// sums out with parts() and run their gate math in a plain loop over the rows (RB inlined
// copies of it: the S step 1.4x slower).
template <int N, class F>
inline void static_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// v is in a register from here on: a load is not folded into each FMA that uses it, which
// GCC does in a tile of few rows, loading a panel's vector RB times a k instead of once.
template <class V>
inline void in_register(V& v) { asm("" : "+v"(v)); }

#ifdef __AVX512F__
using Vec = __m512;  // the widest vector of the build
constexpr int kTileRows = 8;  // 4 and 10 measured level at S, X, M; 6 slower at B 8 (6 + 2)
template <int RB, int NV>
struct Tile {  // the NV groups of 8 columns two to a register, the last one half full if NV is odd
  static constexpr int NZ = (NV + 1) / 2;
  __m512 a[RB][NZ];
  void zero() {
    static_for<RB>([&](auto r) { static_for<NZ>([&](auto z) { a[r][z] = _mm512_setzero_ps(); }); });
  }
  template <int R, int G>
  __m256 part() const {
    const __m512 v = a[R][G / 2];
    if constexpr (G % 2 == 0) return _mm512_castps512_ps256(v);
    else return _mm512_extractf32x8_ps(v, 1);
  }
  void parts(__m256 (&out)[RB][NV]) const {  // every group of 8 columns of every row
    static_for<RB>([&](auto r) { static_for<NV>([&](auto g) { out[r][g] = part<r, g>(); }); });
  }
  void registers(__m512 (&out)[RB][NZ]) const {
    static_for<RB>([&](auto r) { static_for<NZ>([&](auto z) { out[r][z] = a[r][z]; }); });
  }
  template <int Z>
  void clear_register() {
    static_for<RB>([&](auto r) { a[r][Z] = _mm512_setzero_ps(); });
  }
  // a[r] += sum_k rows[r][k] panel[k]
  [[gnu::flatten]] void accumulate(const float* rows, int64_t ld, const float* panel, int64_t K) {
    Tile t = *this;
    for (int64_t k = 0; k < K; ++k) {
      const float* pw = panel + k * NV * 8;
      __m512 w[NZ];
      static_for<NZ>([&](auto z) {
        w[z] = 2 * z + 1 < NV ? _mm512_loadu_ps(pw + 16 * z)
                              : _mm512_maskz_loadu_ps(0xFF, pw + 16 * z);
      });
      static_for<RB>([&](auto r) {
        const __m512 x = _mm512_set1_ps(rows[r * ld + k]);
        static_for<NZ>([&](auto z) { t.a[r][z] = _mm512_fmadd_ps(x, w[z], t.a[r][z]); });
      });
    }
    *this = t;
  }
  // The same over two panels of 32 columns side by side (NV 8): a[r][0..1] from p0, a[r][2..3]
  // from p1, each sum over k in the same order as accumulate()'s. The panels' vectors are
  // held in registers: in a tile of 4 rows GCC folds them into the FMAs, at 0.5 of the speed
  // (and an array of them is spilled, hence the names).
  [[gnu::flatten]] void accumulate_pair(const float* rows, int64_t ld, const float* p0,
                                        const float* p1, int64_t K) {
    static_assert(NV == 8, "two panels of 32 columns");
    Tile t = *this;
    for (int64_t k = 0; k < K; ++k) {
      __m512 w0 = _mm512_loadu_ps(p0 + k * 32), w1 = _mm512_loadu_ps(p0 + k * 32 + 16);
      __m512 w2 = _mm512_loadu_ps(p1 + k * 32), w3 = _mm512_loadu_ps(p1 + k * 32 + 16);
      in_register(w0); in_register(w1); in_register(w2); in_register(w3);
      static_for<RB>([&](auto r) {
        const __m512 x = _mm512_set1_ps(rows[r * ld + k]);
        t.a[r][0] = _mm512_fmadd_ps(x, w0, t.a[r][0]);
        t.a[r][1] = _mm512_fmadd_ps(x, w1, t.a[r][1]);
        t.a[r][2] = _mm512_fmadd_ps(x, w2, t.a[r][2]);
        t.a[r][3] = _mm512_fmadd_ps(x, w3, t.a[r][3]);
      });
    }
    *this = t;
  }
};
#else
using Vec = __m256;
constexpr int kTileRows = 3;
template <int RB, int NV>
struct Tile {
  static constexpr int NZ = NV;
  __m256 a[RB][NV];
  void zero() {
    static_for<RB>([&](auto r) { static_for<NV>([&](auto g) { a[r][g] = _mm256_setzero_ps(); }); });
  }
  template <int R, int G>
  __m256 part() const { return a[R][G]; }
  void parts(__m256 (&out)[RB][NV]) const {
    static_for<RB>([&](auto r) { static_for<NV>([&](auto g) { out[r][g] = a[r][g]; }); });
  }
  void registers(__m256 (&out)[RB][NZ]) const { parts(out); }
  template <int Z>
  void clear_register() {
    static_for<RB>([&](auto r) { a[r][Z] = _mm256_setzero_ps(); });
  }
  [[gnu::flatten]] void accumulate(const float* rows, int64_t ld, const float* panel, int64_t K) {
    Tile t = *this;
    for (int64_t k = 0; k < K; ++k) {
      const float* pw = panel + k * NV * 8;
      __m256 w[NV];
      static_for<NV>([&](auto g) { w[g] = _mm256_loadu_ps(pw + g * 8); });
      static_for<RB>([&](auto r) {
        const __m256 x = _mm256_broadcast_ss(rows + r * ld + k);
        static_for<NV>([&](auto g) { t.a[r][g] = _mm256_fmadd_ps(x, w[g], t.a[r][g]); });
      });
    }
    *this = t;
  }
};
#endif
constexpr int kVecLanes = sizeof(Vec) / sizeof(float);

// f(std::integral_constant<int, RB>, r0) over B rows in tiles of kTileRows, the last smaller.
template <class F>
inline void over_row_tiles(int64_t B, F&& f) {
  int64_t r = 0;
  for (; r + kTileRows <= B; r += kTileRows) f(std::integral_constant<int, kTileRows>{}, r);
  static_for<kTileRows - 1>([&](auto m) {
    if (B - r == m + 1) f(std::integral_constant<int, m + 1>{}, r);
  });
}

// A tile's columns [0, n_out) (at most NV * 8) stored to out (row stride ldo), or added to it.
template <int RB, int NV>
inline void store_tile(const Tile<RB, NV>& acc, float* out, int64_t ldo, int64_t n_out, bool add) {
  static_for<RB>([&](auto r) {
    static_for<NV>([&](auto v) {
      if (v * 8 >= n_out) return;
      float* o = out + r * ldo + v * 8;
      const int n = (int)std::min<int64_t>(8, n_out - v * 8);
      const __m256 a = acc.template part<r, v>();
      store_n(o, add ? _mm256_add_ps(a, load_n(o, n)) : a, n);
    });
  });
}

// f(RB, r0, kb, NB) over the B rows and the blocks [kb0, kb1) of a step's product: RB rows
// from r0 (a tile) times NB blocks from kb, RB and NB std::integral_constants. Above kPairRows
// rows, block by block (NB 1), every tile under one block's panel, which each reads from the
// cache. At most kPairRows rows (one tile), two blocks at a time (NB 2; the last alone where
// their number is odd), four registers a row: with one block's two a row, a tile of 4 rows
// ran at 0.4 of the speed of one of 5 or more (too few independent sums in flight, and each
// panel vector loaded RB times). Each sum runs over k in the same order either way, so the
// numbers do not depend on the rows and blocks a thread is given.
#ifdef __AVX512F__
constexpr int kPairRows = 4;  // 5 and 6 measured level
#else
constexpr int kPairRows = 0;
#endif
template <class F>
inline void over_tiles_and_blocks(int64_t B, int64_t kb0, int64_t kb1, F&& f) {
  using One = std::integral_constant<int, 1>;
  if (B > kPairRows) {
    for (int64_t kb = kb0; kb < kb1; ++kb)
      over_row_tiles(B, [&](auto RB, int64_t r0) { f(RB, r0, kb, One{}); });
    return;
  }
  over_row_tiles(B, [&](auto RB, int64_t r0) {
    int64_t kb = kb0;
    if constexpr (RB <= kPairRows)
      for (; kb + 2 <= kb1; kb += 2) f(RB, r0, kb, std::integral_constant<int, 2>{});
    for (; kb < kb1; ++kb) f(RB, r0, kb, One{});
  });
}

// out[r][j] (+)= sum_k rows[r][k] W[k][j] for all B rows (row stride ld), K entries each, and
// the columns j of the blocks [kb0, kb1) of 32: block kb's panel (K, 32) at panels + kb*K*32,
// its columns at out + kb*32 (row stride ldo), n_cols columns in all (the last block may be
// narrower). The kernels' products of a step: the reverse loops' dh_{t-1} = dz W, the
// samplers' and the heads' rows times a packed weight.
inline void rows_times_panels(const float* rows, int64_t ld, int64_t B, const float* panels,
                              int64_t K, int64_t kb0, int64_t kb1, float* out, int64_t ldo,
                              int64_t n_cols, bool add) {
  over_tiles_and_blocks(B, kb0, kb1, [&](auto RB, int64_t r0, int64_t kb, auto NB) {
    Tile<RB, 4 * NB> acc;
    acc.zero();
    const float* panel = panels + kb * K * 32;
    if constexpr (NB == 2) acc.accumulate_pair(rows + r0 * ld, ld, panel, panel + K * 32, K);
    else acc.accumulate(rows + r0 * ld, ld, panel, K);
    store_tile(acc, out + r0 * ldo + kb * 32, ldo, std::min<int64_t>(NB * 32, n_cols - kb * 32),
               add);
  });
}

}  // namespace jrnn_native

// Block-sparse attention for the CPU (fp32): the `cpp` backend of skyreels-attention.
//
// The selected key/value blocks are read in place from the [B, L, H, D] tensors (BLAS sgemm with
// the tensors' token stride as leading dimension, H*D when contiguous): nothing is gathered. Keys at or past the valid length (the tail of a partial
// block, padding) are left out of the score tiles, so no masking pass exists and padding values are
// never read.
//
// forward:  one task per (batch, head, query block); scores against up to kGroupKeys selected keys
//           at a time, online softmax in fp32 (FlashAttention-2 style), O += P V by sgemm. Saves the
//           natural-log log-sum-exp per row (-inf for a row with no key; its output is 0).
// backward: P is recomputed from the saved log-sum-exp, twice, so that every output tile has one
//           writer (no atomics, deterministic): dQ per query block over its selected key blocks
//           (forward index), dK and dV per key block over the query blocks that selected it
//           (reverse index, built by the caller).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

// Row-major C[M, N] = alpha * op(A)[M, K] op(B)[K, N] + beta * C, with leading dimensions (row
// strides) lda, ldb, ldc; op is 'N' or 'T'. A row-major matrix is its column-major transpose, so
// this is BLAS's C^T = op(B)^T op(A)^T.
inline void gemm(char op_a, char op_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(&op_b, &op_a, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// 16 fp32 lanes as a GCC/Clang vector type: one AVX-512 register, two AVX2 registers, or whatever
// the target has; the compiler lowers it, so the softmax below is vectorised on every x86/ARM CPU.
typedef float vfloat __attribute__((vector_size(64)));
typedef int32_t vint __attribute__((vector_size(64)));
constexpr int kLanes = 16;

inline vfloat load(const float* p) {
  vfloat x;
  std::memcpy(&x, p, sizeof(x));
  return x;
}

inline void store(float* p, vfloat x) { std::memcpy(p, &x, sizeof(x)); }

inline vfloat splat(float x) { return vfloat{} + x; }

// exp(x) for x <= 88 (inputs below -87 give ~1e-38 instead of 0; -inf is fine), within 1.2 ulp
// on [-87, 0.5] (float32 emulation against float64 exp): Cody-Waite
// reduction x = n ln2 + r with |r| <= ln2/2, a degree-7 Taylor polynomial, 2^n from exponent bits.
inline vfloat fast_exp(vfloat x) {
  const vfloat lo = splat(-87.0f);
  x = x < lo ? lo : x;
  const vfloat shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to nearest integer
  const vfloat n = (x * 1.44269504088896341f + shifter) - shifter;
  const vfloat r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  vfloat p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float fast_exp(float x) { return fast_exp(splat(x))[0]; }

inline float horizontal_max(vfloat x) {
  float m = x[0];
  for (int i = 1; i < kLanes; ++i) m = std::max(m, x[i]);
  return m;
}

inline float horizontal_sum(vfloat x) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += x[i];
  return s;
}

// Row max of s[0:n], then s <- exp(s - m) in place; returns (m, sum of the exps).
inline std::pair<float, float> exp_row(float* s, int n, float m) {
  const int full = n - n % kLanes;
  vfloat vm = splat(m);
  for (int j = 0; j < full; j += kLanes) {
    const vfloat x = load(s + j);
    vm = x > vm ? x : vm;
  }
  m = horizontal_max(vm);
  for (int j = full; j < n; ++j) m = std::max(m, s[j]);
  vm = splat(m);
  vfloat vsum = {};
  for (int j = 0; j < full; j += kLanes) {
    const vfloat e = fast_exp(load(s + j) - vm);
    store(s + j, e);
    vsum += e;
  }
  float sum = horizontal_sum(vsum);
  for (int j = full; j < n; ++j) {
    s[j] = fast_exp(s[j] - m);
    sum += s[j];
  }
  return {m, sum};
}

// The softmax gradient of one score row, in place: ds <- exp(s - shift) * (ds - delta), where ds
// holds dP = dO V^T. shift (the log-sum-exp) and delta (rowsum(dO * O)) are one value for a row of
// queries against keys (dQ pass), or one per column for a row of a key against queries (dK/dV
// pass, kPerColumn). With kStoreP, s is overwritten with P = exp(s - shift) (dV needs it).
template <bool kPerColumn, bool kStoreP>
inline void softmax_grad_row(float* s, const float* shift, float* ds, const float* delta, int n) {
  const int full = n - n % kLanes;
  for (int j = 0; j < full; j += kLanes) {
    const vfloat sh = kPerColumn ? load(shift + j) : splat(shift[0]);
    const vfloat de = kPerColumn ? load(delta + j) : splat(delta[0]);
    const vfloat p = fast_exp(load(s + j) - sh);
    if (kStoreP) store(s + j, p);
    store(ds + j, p * (load(ds + j) - de));
  }
  for (int j = full; j < n; ++j) {
    const float p = fast_exp(s[j] - shift[kPerColumn ? j : 0]);
    if (kStoreP) s[j] = p;
    ds[j] = p * (ds[j] - delta[kPerColumn ? j : 0]);
  }
}

constexpr int kGroupKeys = 512;  // score columns per online-softmax step of the forward

// A [B, L, H, D] tensor seen as rows of D floats: row (b, l, h) starts at data + offset(b, l, h).
struct Rows {
  float* data;
  int64_t sb, sl, sh;
  int ld;  // stride between consecutive tokens (same batch, same head): the BLAS leading dimension

  explicit Rows(const at::Tensor& t)
      : data(t.data_ptr<float>()), sb(t.stride(0)), sl(t.stride(1)), sh(t.stride(2)),
        ld(static_cast<int>(t.stride(1))) {}
  float* at(int64_t b, int64_t token, int64_t h) const { return data + b * sb + token * sl + h * sh; }
};

void check_qkv(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 4 && t.stride(3) == 1, name, " must be [B, L, H, D] with a contiguous last dim");
  // BLAS needs a leading dimension of at least D (an expanded view has token stride 0).
  TORCH_CHECK(t.size(1) == 1 || t.stride(1) >= t.size(3), name, ": token stride ", t.stride(1),
              " is smaller than the head dim ", t.size(3), " (make it contiguous)");
  TORCH_CHECK(t.stride(1) <= std::numeric_limits<int>::max(), name, ": token stride too large for BLAS");
}

// q, k, v, the index tables and kv_valid agree in shape: the kernels index memory with them.
void check_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index,
                  const at::Tensor& counts, const at::Tensor& kv_valid, int64_t block_size) {
  TORCH_CHECK(block_size >= 1, "block_size must be positive, got ", block_size);
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3),
              "k/v must be [B, Lk, H, D] matching q ", q.sizes(), ", got ", k.sizes());
  const int64_t n_q_blocks = (q.size(1) + block_size - 1) / block_size;
  TORCH_CHECK(index.dim() == 4 && index.size(0) == q.size(0) && index.size(1) == q.size(2) &&
                  index.size(2) == n_q_blocks,
              "block_index must be [B, H, ", n_q_blocks, ", C], got ", index.sizes());
  TORCH_CHECK(counts.dim() == 3 && counts.size(0) == q.size(0) && counts.size(1) == q.size(2) &&
                  counts.size(2) == n_q_blocks,
              "block_counts must be [B, H, ", n_q_blocks, "], got ", counts.sizes());
  TORCH_CHECK(kv_valid.dim() == 1 && kv_valid.size(0) == q.size(0), "kv_valid must be [B], got ",
              kv_valid.sizes());
}

void check_int32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kInt && t.is_contiguous(), name,
              " must be a contiguous int32 CPU tensor");
}

// Keys of block kb that exist and are valid: min(S, limit - kb * S), 0 for a padding slot.
inline int block_keys(int64_t kb, int64_t S, int64_t limit) {
  if (kb < 0) return 0;
  return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(S, limit - kb * S)));
}

std::vector<at::Tensor> block_sparse_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& block_index, const at::Tensor& block_counts,
                                             const at::Tensor& kv_valid, int64_t block_size, double scale) {
  check_qkv(q, "q");
  check_qkv(k, "k");
  check_qkv(v, "v");
  check_int32(block_index, "block_index");
  check_int32(block_counts, "block_counts");
  check_int32(kv_valid, "kv_valid");
  check_shapes(q, k, v, block_index, block_counts, kv_valid, block_size);
  const int64_t batch = q.size(0), lq = q.size(1), heads = q.size(2), dim = q.size(3);
  const int64_t n_q_blocks = block_index.size(2), width = block_index.size(3);
  const int64_t S = block_size;
  TORCH_CHECK(S <= kGroupKeys, "block_size must lie in [1, ", kGroupKeys, "]");
  const int64_t lk = k.size(1);

  auto out = at::empty({batch, lq, heads, dim}, q.options());
  auto lse = at::empty({batch, heads, lq}, q.options());
  const Rows Q(q), K(k), V(v), O(out);
  float* lse_data = lse.data_ptr<float>();
  const int32_t* index = block_index.data_ptr<int32_t>();
  const int32_t* counts = block_counts.data_ptr<int32_t>();
  const int32_t* valid = kv_valid.data_ptr<int32_t>();
  const float fscale = static_cast<float>(scale);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int d = static_cast<int>(dim);

  at::parallel_for(0, batch * heads * n_q_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(S * kGroupKeys), acc(S * dim), row_max(S), row_sum(S);
    std::vector<const float*> group_v(kGroupKeys);
    std::vector<int> group_n(kGroupKeys);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t qb = task % n_q_blocks, bh = task / n_q_blocks, b = bh / heads, h = bh % heads;
      const int rows = static_cast<int>(std::min(S, lq - qb * S));
      const float* q_tile = Q.at(b, qb * S, h);
      const int32_t* slots = index + task * width;
      const int64_t count = std::min<int64_t>(counts[task], width);
      std::fill(acc.begin(), acc.begin() + rows * dim, 0.0f);
      std::fill(row_max.begin(), row_max.end(), neg_inf);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      int64_t slot = 0;
      while (slot < count) {
        // Scores against the next selected blocks, valid keys only, packed side by side.
        int cols = 0, n_group = 0;
        while (slot < count && cols + S <= kGroupKeys) {
          const int64_t kb = slots[slot++];
          const int n = block_keys(kb, S, std::min<int64_t>(valid[b], lk));
          if (n == 0) continue;
          gemm('N', 'T', rows, n, d, fscale, q_tile, Q.ld, K.at(b, kb * S, h), K.ld, 0.0f,
               scores.data() + cols, kGroupKeys);
          group_v[n_group] = V.at(b, kb * S, h);
          group_n[n_group++] = n;
          cols += n;
        }
        if (cols == 0) continue;
        for (int r = 0; r < rows; ++r) {
          const auto [m, sum] = exp_row(scores.data() + r * kGroupKeys, cols, row_max[r]);
          const float correction = row_max[r] == neg_inf ? 0.0f : fast_exp(row_max[r] - m);
          row_sum[r] = row_sum[r] * correction + sum;
          row_max[r] = m;
          if (correction != 1.0f) {
            float* a = acc.data() + r * dim;
            for (int64_t i = 0; i < dim; ++i) a[i] *= correction;
          }
        }
        int offset = 0;  // acc += P[:, group] V[group]
        for (int g = 0; g < n_group; ++g) {
          gemm('N', 'N', rows, d, group_n[g], 1.0f, scores.data() + offset, kGroupKeys, group_v[g], V.ld, 1.0f,
               acc.data(), d);
          offset += group_n[g];
        }
      }
      float* lse_row = lse_data + bh * lq + qb * S;
      for (int r = 0; r < rows; ++r) {
        const float inv = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;
        const float* a = acc.data() + r * dim;
        float* o = O.at(b, qb * S + r, h);
        for (int64_t i = 0; i < dim; ++i) o[i] = a[i] * inv;
        lse_row[r] = row_sum[r] > 0.0f ? row_max[r] + std::log(row_sum[r]) : neg_inf;
      }
    }
  });
  return {out, lse};
}

// grad_out [B, Lq, H, D]; lse and delta = rowsum(dO * O) [B, H, Lq]; reverse_index/counts
// [B, H, nKB, C'] / [B, H, nKB]: the query blocks that selected each key block.
std::vector<at::Tensor> block_sparse_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v, const at::Tensor& lse,
                                              const at::Tensor& delta, const at::Tensor& block_index,
                                              const at::Tensor& block_counts, const at::Tensor& reverse_index,
                                              const at::Tensor& reverse_counts, const at::Tensor& kv_valid,
                                              int64_t block_size, double scale) {
  check_qkv(grad_out, "grad_out");
  check_qkv(q, "q");
  check_qkv(k, "k");
  check_qkv(v, "v");
  for (const auto& [t, name] : {std::pair{&lse, "lse"}, std::pair{&delta, "delta"}}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(), name, " must be contiguous float32");
  }
  check_int32(block_index, "block_index");
  check_int32(block_counts, "block_counts");
  check_int32(reverse_index, "reverse_index");
  check_int32(reverse_counts, "reverse_counts");
  check_int32(kv_valid, "kv_valid");
  check_shapes(q, k, v, block_index, block_counts, kv_valid, block_size);
  const int64_t batch = q.size(0), lq = q.size(1), heads = q.size(2), dim = q.size(3), lk = k.size(1);
  const int64_t n_q_blocks = block_index.size(2), width = block_index.size(3);
  const int64_t S = block_size;
  const int64_t n_kv_blocks = (lk + S - 1) / S;
  TORCH_CHECK(grad_out.sizes() == q.sizes(), "grad_out must have q's shape ", q.sizes(), ", got ",
              grad_out.sizes());
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == batch && lse.size(1) == heads && lse.size(2) == lq &&
                  delta.sizes() == lse.sizes(),
              "lse and delta must be [B, H, Lq] = [", batch, ", ", heads, ", ", lq, "], got ", lse.sizes(),
              " and ", delta.sizes());
  TORCH_CHECK(reverse_index.dim() == 4 && reverse_index.size(0) == batch && reverse_index.size(1) == heads &&
                  reverse_index.size(2) == n_kv_blocks,
              "reverse_index must be [B, H, ", n_kv_blocks, ", C'], got ", reverse_index.sizes());
  TORCH_CHECK(reverse_counts.dim() == 3 && reverse_counts.size(0) == batch && reverse_counts.size(1) == heads &&
                  reverse_counts.size(2) == n_kv_blocks,
              "reverse_counts must be [B, H, ", n_kv_blocks, "], got ", reverse_counts.sizes());
  const int64_t reverse_width = reverse_index.size(3);
  const int d = static_cast<int>(dim), ld_tile = static_cast<int>(S);
  TORCH_CHECK(S <= kGroupKeys, "block_size must lie in [1, ", kGroupKeys, "]");

  auto grad_q = at::empty_like(q, at::MemoryFormat::Contiguous);
  auto grad_k = at::zeros({batch, lk, heads, dim}, k.options());
  auto grad_v = at::zeros({batch, lk, heads, dim}, v.options());
  const Rows dO(grad_out), Q(q), K(k), V(v), dQ(grad_q), dK(grad_k), dV(grad_v);
  const float* lse_data = lse.data_ptr<float>();
  const float* delta_data = delta.data_ptr<float>();
  const int32_t* valid = kv_valid.data_ptr<int32_t>();
  const float fscale = static_cast<float>(scale);

  // dQ: one task per (b, h, query block), over its selected key blocks.
  const int32_t* index = block_index.data_ptr<int32_t>();
  const int32_t* counts = block_counts.data_ptr<int32_t>();
  at::parallel_for(0, batch * heads * n_q_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(S * S), dscores(S * S), acc(S * dim);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t qb = task % n_q_blocks, bh = task / n_q_blocks, b = bh / heads, h = bh % heads;
      const int rows = static_cast<int>(std::min(S, lq - qb * S));
      const float* lse_row = lse_data + bh * lq + qb * S;
      const float* delta_row = delta_data + bh * lq + qb * S;
      const int64_t count = std::min<int64_t>(counts[task], width);
      std::fill(acc.begin(), acc.begin() + rows * dim, 0.0f);
      for (int64_t slot = 0; slot < count; ++slot) {
        const int64_t kb = index[task * width + slot];
        const int n = block_keys(kb, S, std::min<int64_t>(valid[b], lk));
        if (n == 0) continue;
        const float* k_tile = K.at(b, kb * S, h);
        gemm('N', 'T', rows, n, d, fscale, Q.at(b, qb * S, h), Q.ld, k_tile, K.ld, 0.0f, scores.data(), ld_tile);
        gemm('N', 'T', rows, n, d, 1.0f, dO.at(b, qb * S, h), dO.ld, V.at(b, kb * S, h), V.ld, 0.0f,
             dscores.data(), ld_tile);
        for (int r = 0; r < rows; ++r) {
          softmax_grad_row<false, false>(scores.data() + r * S, lse_row + r, dscores.data() + r * S,
                                         delta_row + r, n);
        }
        gemm('N', 'N', rows, d, n, fscale, dscores.data(), ld_tile, k_tile, K.ld, 1.0f, acc.data(), d);
      }
      for (int r = 0; r < rows; ++r) {
        std::copy_n(acc.data() + r * dim, dim, dQ.at(b, qb * S + r, h));
      }
    }
  });

  // dK, dV: one task per (b, h, key block), over the query blocks that selected it.
  const int32_t* reverse = reverse_index.data_ptr<int32_t>();
  const int32_t* reverse_n = reverse_counts.data_ptr<int32_t>();
  at::parallel_for(0, batch * heads * n_kv_blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(S * S), dscores(S * S), acc_k(S * dim), acc_v(S * dim);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t kb = task % n_kv_blocks, bh = task / n_kv_blocks, b = bh / heads, h = bh % heads;
      const int n = block_keys(kb, S, std::min<int64_t>(valid[b], lk));
      const int64_t count = std::min<int64_t>(reverse_n[task], reverse_width);
      if (n == 0 || count == 0) continue;  // gradients stay zero
      const float* k_tile = K.at(b, kb * S, h);
      const float* v_tile = V.at(b, kb * S, h);
      std::fill(acc_k.begin(), acc_k.begin() + n * dim, 0.0f);
      std::fill(acc_v.begin(), acc_v.begin() + n * dim, 0.0f);
      for (int64_t slot = 0; slot < count; ++slot) {
        const int64_t qb = reverse[task * reverse_width + slot];
        if (qb < 0 || qb >= n_q_blocks) continue;
        const int rows = static_cast<int>(std::min(S, lq - qb * S));
        const float* q_tile = Q.at(b, qb * S, h);
        const float* do_tile = dO.at(b, qb * S, h);
        const float* lse_row = lse_data + bh * lq + qb * S;
        const float* delta_row = delta_data + bh * lq + qb * S;
        // Transposed tiles: row j = key j, column r = query r.
        gemm('N', 'T', n, rows, d, fscale, k_tile, K.ld, q_tile, Q.ld, 0.0f, scores.data(), ld_tile);
        gemm('N', 'T', n, rows, d, 1.0f, v_tile, V.ld, do_tile, dO.ld, 0.0f, dscores.data(), ld_tile);
        for (int j = 0; j < n; ++j) {
          softmax_grad_row<true, true>(scores.data() + j * S, lse_row, dscores.data() + j * S, delta_row, rows);
        }
        gemm('N', 'N', n, d, rows, 1.0f, scores.data(), ld_tile, do_tile, dO.ld, 1.0f, acc_v.data(), d);
        gemm('N', 'N', n, d, rows, fscale, dscores.data(), ld_tile, q_tile, Q.ld, 1.0f, acc_k.data(), d);
      }
      for (int j = 0; j < n; ++j) {
        std::copy_n(acc_k.data() + j * dim, dim, dK.at(b, kb * S + j, h));
        std::copy_n(acc_v.data() + j * dim, dim, dV.at(b, kb * S + j, h));
      }
    }
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace

TORCH_LIBRARY(skyreels_block_sparse_cpu, m) {
  m.def(
      "forward(Tensor q, Tensor k, Tensor v, Tensor block_index, Tensor block_counts, Tensor kv_valid, "
      "int block_size, float scale) -> Tensor[]");
  m.def(
      "backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor lse, Tensor delta, Tensor block_index, "
      "Tensor block_counts, Tensor reverse_index, Tensor reverse_counts, Tensor kv_valid, int block_size, "
      "float scale) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(skyreels_block_sparse_cpu, CPU, m) {
  m.impl("forward", &block_sparse_forward);
  m.impl("backward", &block_sparse_backward);
}

"""Triton kernels of block-sparse attention: forward, and the three backward kernels.

FlashAttention-2 style (Dao 2023) restricted to the selected key blocks. All pointer arithmetic is
explicit (no `tl.make_block_ptr`, which Triton 3.9 removed), so the kernels compile on Triton 3.6
through 3.9 and run under TRITON_INTERPRET=1.

Scores are kept in base 2: s2 = (q . k) * scale * log2(e), so the softmax uses exp2, and the saved
log-sum-exp `lse2 = m + log2(l)` is in the same units. A query row with no attended key stores
lse2 = +inf, which makes every recomputed probability exp2(s2 - lse2) exactly 0 in the backward.

Tensors are in the `[B, L, H, D]` layout with unit stride on D; `LSE` and `DELTA` are `[B, H, Lq]`
float32; the index tensors are contiguous int32 (`index.py` describes the format). One program
handles one tile of BLOCK_M query rows (or BLOCK_N key rows) of one (batch, head); tiles divide
`BLOCK_SIZE`, so a tile lies inside one block and shares its index row.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["backward_delta_kernel", "backward_dkdv_kernel", "backward_dq_kernel", "forward_kernel"]


@triton.jit
def forward_kernel(
    Q, K, V, O, LSE, BLOCK_INDEX, BLOCK_COUNTS, KV_VALID,
    stride_qb, stride_ql, stride_qh,
    stride_kb, stride_kl, stride_kh,
    stride_vb, stride_vl, stride_vh,
    stride_ob, stride_ol, stride_oh,
    H, Lq, n_q_blocks, index_width, scale_log2,
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_block = (pid_m * BLOCK_M) // BLOCK_SIZE
    row = (b * H + h) * n_q_blocks + q_block  # this tile's row of the block index

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ok = offs_m < Lq
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_ql + offs_d[None, :]
    q = tl.load(q_ptrs, mask=q_ok[:, None], other=0.0)
    if UPCAST:  # the interpreter computes low-precision dots wrongly: work in fp32 there
        q = q.to(tl.float32)

    kv_valid = tl.load(KV_VALID + b)
    count = tl.load(BLOCK_COUNTS + row)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for slot in range(0, count):
        k_block = tl.load(BLOCK_INDEX + row * index_width + slot)
        for sub in range(0, BLOCK_SIZE // BLOCK_N):
            offs_n = k_block * BLOCK_SIZE + sub * BLOCK_N + tl.arange(0, BLOCK_N)
            key_ok = offs_n < kv_valid  # kv_valid <= Lk also masks a partial last block
            rows_n = offs_n.to(tl.int64)
            k_t = tl.load(
                k_base + rows_n[None, :] * stride_kl + offs_d[:, None], mask=key_ok[None, :], other=0.0
            )
            v = tl.load(
                v_base + rows_n[:, None] * stride_vl + offs_d[None, :], mask=key_ok[:, None], other=0.0
            )
            if UPCAST:
                k_t = k_t.to(tl.float32)
                v = v.to(tl.float32)
            s = tl.dot(q, k_t, input_precision=DOT_PRECISION) * scale_log2
            s = tl.where(key_ok[None, :], s, float("-inf"))
            # Online softmax; a row that has seen only masked keys keeps m = -inf, so the shift
            # uses 0 there to avoid (-inf) - (-inf).
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m_i - m_shift)
            p = tl.math.exp2(s - m_shift[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

    empty = l_i == 0.0  # nothing attended: output 0, lse +inf
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_ol + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=q_ok[:, None])
    tl.store(LSE + (b * H + h) * Lq + offs_m, lse, mask=q_ok)


@triton.jit
def backward_delta_kernel(
    O, DO, DELTA,
    stride_ob, stride_ol, stride_oh,
    stride_dob, stride_dol, stride_doh,
    H, Lq,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """delta = rowsum(dO * O), the softmax-Jacobian term shared by dQ and dK."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ok = offs_m < Lq
    rows = offs_m[:, None].to(tl.int64)
    o = tl.load(
        O + b * stride_ob + h * stride_oh + rows * stride_ol + offs_d[None, :], mask=q_ok[:, None], other=0.0
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + rows * stride_dol + offs_d[None, :],
        mask=q_ok[:, None],
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + (b * H + h) * Lq + offs_m, delta, mask=q_ok)


@triton.jit
def backward_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, BLOCK_INDEX, BLOCK_COUNTS, KV_VALID,
    stride_qb, stride_ql, stride_qh,
    stride_kb, stride_kl, stride_kh,
    stride_vb, stride_vl, stride_vh,
    stride_dob, stride_dol, stride_doh,
    stride_dqb, stride_dql, stride_dqh,
    H, Lq, n_q_blocks, index_width, scale, scale_log2,
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """dQ = scale * sum over selected keys of dS K, with dS = P * (dP - delta), dP = dO V^T."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_block = (pid_m * BLOCK_M) // BLOCK_SIZE
    row = (b * H + h) * n_q_blocks + q_block

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ok = offs_m < Lq
    rows_m = offs_m[:, None].to(tl.int64)
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows_m * stride_ql + offs_d[None, :],
        mask=q_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + rows_m * stride_dol + offs_d[None, :],
        mask=q_ok[:, None],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + (b * H + h) * Lq + offs_m, mask=q_ok, other=float("inf"))
    delta = tl.load(DELTA + (b * H + h) * Lq + offs_m, mask=q_ok, other=0.0)

    kv_valid = tl.load(KV_VALID + b)
    count = tl.load(BLOCK_COUNTS + row)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for slot in range(0, count):
        k_block = tl.load(BLOCK_INDEX + row * index_width + slot)
        for sub in range(0, BLOCK_SIZE // BLOCK_N):
            offs_n = k_block * BLOCK_SIZE + sub * BLOCK_N + tl.arange(0, BLOCK_N)
            key_ok = offs_n < kv_valid
            rows_n = offs_n.to(tl.int64)
            k = tl.load(
                k_base + rows_n[:, None] * stride_kl + offs_d[None, :], mask=key_ok[:, None], other=0.0
            )
            v_t = tl.load(
                v_base + rows_n[None, :] * stride_vl + offs_d[:, None], mask=key_ok[None, :], other=0.0
            )
            if UPCAST:
                k = k.to(tl.float32)
                v_t = v_t.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
            p = tl.where(key_ok[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
            dp = tl.dot(do, v_t, input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    dq_ptrs = DQ + b * stride_dqb + h * stride_dqh + rows_m * stride_dql + offs_d[None, :]
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=q_ok[:, None])


@triton.jit
def backward_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, QUERY_INDEX, QUERY_COUNTS, KV_VALID,
    stride_qb, stride_ql, stride_qh,
    stride_kb, stride_kl, stride_kh,
    stride_vb, stride_vl, stride_vh,
    stride_dob, stride_dol, stride_doh,
    stride_dkb, stride_dkl, stride_dkh,
    stride_dvb, stride_dvl, stride_dvh,
    H, Lq, Lk, n_kv_blocks, index_width, scale, scale_log2,
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """dV = P^T dO and dK = scale * dS^T Q over the query blocks that selected this key block
    (the reverse index), so every program owns its dK/dV tile and needs no atomics."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    k_block = (pid_n * BLOCK_N) // BLOCK_SIZE
    row = (b * H + h) * n_kv_blocks + k_block  # this tile's row of the reverse index

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    kv_valid = tl.load(KV_VALID + b)
    key_ok = offs_n < kv_valid
    rows_n = offs_n[:, None].to(tl.int64)
    k = tl.load(
        K + b * stride_kb + h * stride_kh + rows_n * stride_kl + offs_d[None, :],
        mask=key_ok[:, None],
        other=0.0,
    )
    v = tl.load(
        V + b * stride_vb + h * stride_vh + rows_n * stride_vl + offs_d[None, :],
        mask=key_ok[:, None],
        other=0.0,
    )
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    count = tl.load(QUERY_COUNTS + row)
    count = tl.where(pid_n * BLOCK_N < kv_valid, count, 0)  # a tile of padded keys has no gradient
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    stats_base = (b * H + h) * Lq
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for slot in range(0, count):
        q_block = tl.load(QUERY_INDEX + row * index_width + slot)
        for sub in range(0, BLOCK_SIZE // BLOCK_M):
            offs_m = q_block * BLOCK_SIZE + sub * BLOCK_M + tl.arange(0, BLOCK_M)
            q_ok = offs_m < Lq
            rows_m = offs_m.to(tl.int64)
            q = tl.load(q_base + rows_m[:, None] * stride_ql + offs_d[None, :], mask=q_ok[:, None], other=0.0)
            do = tl.load(
                do_base + rows_m[:, None] * stride_dol + offs_d[None, :], mask=q_ok[:, None], other=0.0
            )
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            lse = tl.load(LSE + stats_base + offs_m, mask=q_ok, other=float("inf"))
            delta = tl.load(DELTA + stats_base + offs_m, mask=q_ok, other=0.0)
            s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * scale_log2  # [N, M]
            p_t = tl.where(key_ok[:, None], tl.math.exp2(s_t - lse[None, :]), 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)

    store_ok = (offs_n < Lk)[:, None]
    dk_ptrs = DK + b * stride_dkb + h * stride_dkh + rows_n * stride_dkl + offs_d[None, :]
    dv_ptrs = DV + b * stride_dvb + h * stride_dvh + rows_n * stride_dvl + offs_d[None, :]
    tl.store(dk_ptrs, (dk * scale).to(DK.dtype.element_ty), mask=store_ok)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=store_ok)

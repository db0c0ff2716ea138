"""Backend selection, typed errors, masks and the backend report."""

from __future__ import annotations

import pytest
import torch

import skyreels_attention.api as api
from skyreels_attention import (
    AttentionConfig,
    AttentionKernel,
    BackendCapabilities,
    BackendUnavailableError,
    BlockMask,
    DenseMask,
    KeyPaddingMask,
    MaskKind,
    attention,
    get_backend,
    naive_attention,
    print_backends,
    select_backend,
)
from skyreels_attention.__main__ import main as cli_main
from skyreels_attention.backends import BACKEND_CLASSES, ReferenceBackend
from skyreels_attention.backends.flash import pack_keys_for_varlen


def qkv(batch=2, lq=5, lk=7, heads=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, lq, heads, dim, generator=gen),
        torch.randn(batch, lk, heads, dim, generator=gen),
        torch.randn(batch, lk, heads, dim, generator=gen),
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_explicit_flash_on_cpu_raises_with_every_reason():
    q, k, v = qkv()
    with pytest.raises(BackendUnavailableError) as info:
        attention(q, k, v, backend="flash")
    reasons = info.value.reasons["flash"]
    assert any("no CUDA device" in r for r in reasons)
    assert any("device 'cpu' not supported" in r for r in reasons)
    assert any("dtype" in r or "importable" in r for r in reasons)


def test_unknown_backend_name_is_a_clear_error():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"backend: expected one of .*got 'fast'"):
        attention(q, k, v, backend="fast")
    with pytest.raises(ValueError, match="backend"):
        AttentionKernel(AttentionConfig(backend="nope"))


def test_auto_selection_on_cpu_picks_sdpa_and_matches_reference():
    q, k, v = qkv()
    assert select_backend(q, k, v).name == "sdpa"  # inputs on CPU: sdpa is first in AUTO_PRIORITY["cpu"]
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v), atol=1e-6, rtol=1e-5)


class _MaskBlindBackend(ReferenceBackend):
    """A fast backend that cannot apply masks (what flash is for dense masks)."""

    name = "maskblind"
    capabilities = BackendCapabilities(
        dtypes={"cpu": frozenset({torch.float32}), "cuda": frozenset({torch.float32})},
        mask_kinds=frozenset({MaskKind.NONE}),
    )


def test_auto_selection_never_drops_a_mask(monkeypatch):
    monkeypatch.setitem(BACKEND_CLASSES, "maskblind", _MaskBlindBackend)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setitem(api.AUTO_PRIORITY, device, ("maskblind", "reference"))
    api.get_backend.cache_clear()
    try:
        q, k, v = qkv()
        assert select_backend(q, k, v).name == "maskblind"
        mask = KeyPaddingMask(torch.tensor([3, 7]))
        assert select_backend(q, k, v, mask).name == "reference"
        with pytest.raises(BackendUnavailableError, match="mask kind 'key_padding' not supported"):
            attention(q, k, v, mask=mask, backend="maskblind")
    finally:
        api.get_backend.cache_clear()


def test_module_configured_backend_and_per_call_override(monkeypatch):
    calls = []
    original = api.select_backend

    def spy(q, k, v, mask=None, backend=None):
        calls.append(backend)
        return original(q, k, v, mask, backend)

    monkeypatch.setattr(api, "select_backend", spy)
    kernel = AttentionKernel(AttentionConfig(backend="reference"))
    q, k, v = qkv()
    kernel(q, k, v)
    kernel(q, k, v, backend="sdpa")
    AttentionKernel()(q, k, v)
    assert calls == ["reference", "sdpa", None]
    assert "backend=reference" in repr(kernel)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, k, v: (q[0], k, v), r"q: expected 4 dims"),
        (lambda q, k, v: (q, k[:, :, :1], v), r"k, v: expected equal shapes"),
        (
            lambda q, k, v: (q[..., :4], k, v),
            r"q, k: expected the same batch, heads and head dim",
        ),
        (lambda q, k, v: (q.double(), k, v), r"q, k, v: expected one dtype"),
        (lambda q, k, v: (q.long(), k, v), r"q: expected a floating dtype"),
    ],
)
def test_bad_inputs_name_the_argument(change, message):
    q, k, v = change(*qkv())
    with pytest.raises((ValueError, TypeError), match=message):
        attention(q, k, v)


def test_bad_masks_name_the_argument():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"valid_lengths: expected values in \[0, Lk=7\]"):
        attention(q, k, v, mask=KeyPaddingMask(torch.tensor([3, 8])))
    with pytest.raises(ValueError, match=r"valid_lengths: expected 2 entries"):
        attention(q, k, v, mask=KeyPaddingMask(torch.tensor([3])))
    with pytest.raises(TypeError, match="valid_lengths: expected a 1-D integer tensor"):
        KeyPaddingMask(torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match=r"DenseMask.mask: expected a shape broadcastable"):
        attention(q, k, v, mask=DenseMask(torch.ones(5, 6, dtype=torch.bool)))
    with pytest.raises(TypeError, match=r"DenseMask.mask: expected a bool or floating tensor"):
        DenseMask(torch.ones(5, 7, dtype=torch.int64))
    with pytest.raises(TypeError, match="mask: expected None, KeyPaddingMask"):
        attention(q, k, v, mask=torch.ones(5, 7, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_rows_without_any_key_are_zero(backend):
    q, k, v = qkv()
    out = attention(q, k, v, mask=KeyPaddingMask(torch.tensor([0, 7])), backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1:], naive_attention(q[1:], k[1:], v[1:]), atol=1e-6, rtol=1e-5)
    dense = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    dense[:, :, 2] = False
    out = attention(q, k, v, mask=DenseMask(dense), backend=backend)
    assert torch.equal(out[:, 2], torch.zeros_like(out[:, 2]))
    assert torch.isfinite(out).all()


def test_masks_agree_with_hand_built_dense_forms():
    q, k, v = qkv(lq=5, lk=7)
    valid = torch.tensor([4, 7])
    manual = torch.arange(7)[None, :] < valid[:, None]
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5
    logits = logits.masked_fill(~manual[:, None, None, :], float("-inf"))
    expected = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v)
    torch.testing.assert_close(attention(q, k, v, mask=KeyPaddingMask(valid)), expected, atol=1e-6, rtol=1e-5)
    # Additive masks add to the logits.
    bias = torch.randn(1, 2, 5, 7)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5 + bias
    expected = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v)
    torch.testing.assert_close(attention(q, k, v, mask=DenseMask(bias)), expected, atol=1e-6, rtol=1e-5)


def test_block_mask_dense_form():
    # 2 query blocks x 3 key blocks of size 2; Lq=3, Lk=5 (partial last blocks).
    index = torch.tensor([[[[2, 0, -1], [1, -1, -1]]]], dtype=torch.int32)
    counts = torch.tensor([[[2, 1]]], dtype=torch.int32)
    mask = BlockMask(index, counts, block_size=2, kv_valid_lengths=torch.tensor([4]))
    dense = mask.to_dense(1, 1, 3, 5, torch.device("cpu"))[0, 0]
    expected = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool
    )  # block 2 covers key 4 only, which is beyond the valid length 4
    assert torch.equal(dense, expected)


def test_varlen_packing_reproduces_key_padding():
    q, k, v = qkv(batch=3, lq=4, lk=6)
    valid = torch.tensor([6, 2, 5])
    qp, kp, vp, cu_q, cu_k, max_q, max_k = pack_keys_for_varlen(q, k, v, valid)
    assert cu_k.tolist() == [0, 6, 8, 13]
    assert cu_q.tolist() == [0, 4, 8, 12]
    assert (max_q, max_k, tuple(kp.shape)) == (4, 6, (13, 2, 8))
    # Running each packed segment alone equals the padded, masked computation.
    outs = []
    for b in range(3):
        qs = qp[cu_q[b] : cu_q[b + 1]][None]
        ks, vs = kp[cu_k[b] : cu_k[b + 1]][None], vp[cu_k[b] : cu_k[b + 1]][None]
        outs.append(naive_attention(qs, ks, vs)[0])
    torch.testing.assert_close(
        torch.stack(outs), naive_attention(q, k, v, mask=KeyPaddingMask(valid)), atol=1e-6, rtol=1e-5
    )


def test_print_backends_and_cli(capsys):
    text = print_backends()
    for name in BACKEND_CLASSES:
        assert name in text
    if not torch.cuda.is_available():
        assert "no CUDA device" in text
    assert cli_main([]) == 0
    assert "automatic choice" in capsys.readouterr().out


def test_reference_backend_computes_in_float32_for_half_inputs():
    q, k, v = (t.half() for t in qkv(lq=33, lk=65, dim=16))
    out = get_backend("reference").forward(q, k, v, None, 0.25)
    exact = naive_attention(q.double(), k.double(), v.double(), scale=0.25, compute_dtype=torch.float64)
    assert out.dtype == torch.float16
    assert (out.double() - exact).abs().max() <= torch.finfo(torch.float16).eps


def test_the_references_compute_in_float32_under_autocast():
    """The reference backends promise fp32 math; autocast must not lower their matmuls to bf16."""
    from skyreels_attention import attention
    from skyreels_attention.block_sparse import block_sparse_attention, random_block_index

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 130, 2, 16, generator=g) for _ in range(3))
    index, counts = random_block_index(1, 2, 3, 3, max_blocks=2, generator=g)
    want_dense = attention(q, q, q, backend="reference")
    want_sparse = block_sparse_attention(q, k, v, index, counts, block_size=64, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = attention(q, q, q, backend="reference")
        sparse = block_sparse_attention(q, k, v, index, counts, block_size=64, backend="torch")
    assert dense.dtype == sparse.dtype == torch.float32
    torch.testing.assert_close(dense, want_dense, rtol=0, atol=0)
    torch.testing.assert_close(sparse, want_sparse, rtol=0, atol=0)

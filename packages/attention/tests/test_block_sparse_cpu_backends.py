"""The `gather` (gathered blocks + fused SDPA) and `cpp` (our C++ CPU kernel) block-sparse backends
against the fp32 torch reference.

Both, fp32: forward and gradients match the reference tightly (partial blocks, kv_valid_lengths,
cross-attention, -1 padding, empty rows, non-finite padding). gather, fp16/bf16: the parity rule,
max error against the fp32 reference <= 2x the error of plain torch math in that dtype + a small
floor. cpp: block sizes that are not powers of two, rows longer than one online-softmax step,
strided inputs, a deterministic backward, the automatic CPU choice, the switch-off variable, the
build cache name, shape-only (fake) ops for torch.compile. Where the C++ kernel cannot be built
here (no compiler or ninja) its cases are skipped with the reason; where the tools exist, a failed
build fails them.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_attention.block_sparse import (
    AUTO_PRIORITY,
    block_sparse_attention,
    block_sparse_attention_reference,
    block_sparse_backend_capabilities,
    cpp,
    random_block_index,
)
from skyreels_attention.block_sparse.backends import get_block_sparse_backend, resolve_block_sparse_backend
from skyreels_attention.block_sparse.inputs import validate_block_sparse_inputs

_FLOORS = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
_MISSING = cpp._missing_tools()
needs_cpp = pytest.mark.skipif(_MISSING is not None, reason=f"cpp kernel cannot be built here: {_MISSING}")
BACKENDS = ["gather", pytest.param("cpp", marks=needs_cpp)]


def _case(
    batch, heads, lq, lk, head_dim, block_size, *, dtype=torch.float32, valid=None, seed=0, max_blocks=None
):
    """Random q/k/v (requiring grad), an index with variable counts and -1 padding, valid lengths."""
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-lq // block_size), -(-lk // block_size)
    index, counts = random_block_index(
        batch, heads, nqb, nkb, max_blocks=max_blocks or max(1, nkb - 1), variable_counts=True, generator=gen
    )
    q, k, v = (
        torch.randn(batch, length, heads, head_dim, generator=gen).to(dtype).requires_grad_()
        for length in (lq, lk, lk)
    )
    valid_lengths = None if valid is None else torch.tensor(valid, dtype=torch.int32)
    return q, k, v, index, counts, valid_lengths


def _reference(q, k, v, index, counts, block_size, valid, compute_dtype=None):
    return block_sparse_attention_reference(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid,
        scale=q.shape[-1] ** -0.5, compute_dtype=compute_dtype,
    )  # fmt: skip


def _run(backend, q, k, v, index, counts, block_size, valid):
    return block_sparse_attention(
        q, k, v, index, counts, block_size=block_size, kv_valid_lengths=valid, backend=backend
    )


def _gather(q, k, v, index, counts, block_size, valid):
    return _run("gather", q, k, v, index, counts, block_size, valid)


def _outputs_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("batch", "heads", "lq", "lk", "head_dim", "block_size", "valid"),
    [
        (2, 2, 150, 150, 16, 64, None),  # partial last block on both axes
        (2, 1, 200, 200, 8, 32, [130, 200]),  # kv_valid_lengths inside and at a block edge
        (1, 3, 96, 300, 16, 32, [41]),  # cross-attention Lq != Lk, most key blocks invalid
        (2, 2, 256, 128, 32, 64, None),  # whole blocks: may run unmasked
        (2, 2, 256, 128, 64, 64, None),  # whole blocks, VSA's head dim
        (1, 2, 100, 77, 20, 24, [77]),  # a block size and head dim that are not powers of two
        (1, 1, 40, 40, 16, 1, [33]),  # one-token blocks
        (1, 1, 600, 600, 16, 512, None),  # the cpp kernel's largest block size
    ],
)
def test_fp32_forward_and_gradients_match_reference(
    backend, batch, heads, lq, lk, head_dim, block_size, valid
):
    q, k, v, index, counts, valid_t = _case(batch, heads, lq, lk, head_dim, block_size, valid=valid)
    counts[0, 0, 0] = 0  # an empty row: output and gradients must be 0
    index[0, 0, 0] = -1
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    args = (index, counts, block_size, valid_t)
    got = _outputs_and_grads(lambda *t: _run(backend, *t, *args), q, k, v, grad_out)
    want = _outputs_and_grads(lambda *t: _reference(*t, *args), q, k, v, grad_out)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, rtol=1e-5, atol=5e-6, msg=lambda m, n=name: f"{n}: {m}")
    rows = min(block_size, lq)
    assert got[0][0, :rows, 0].abs().max() == 0
    assert got[1][0, :rows, 0].abs().max() == 0


def test_full_rows_unmasked_path_matches_reference():
    """Every row uses all C slots and Lk is whole blocks: the no-mask SDPA path."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 256, 2, 16, generator=gen) for _ in range(3))
    index, counts = random_block_index(1, 2, 4, 4, max_blocks=2, generator=gen)
    assert bool((counts == 2).all())
    got = _gather(q, k, v, index, counts, 64, None)
    torch.testing.assert_close(got, _reference(q, k, v, index, counts, 64, None), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_without_valid_keys_and_nonfinite_padding_stay_zero(backend):
    """Selected blocks entirely past the valid length -> 0; NaN/inf padding never leaks (no_grad too)."""
    q, k, v, index, counts, _ = _case(1, 2, 128, 256, 16, 64, max_blocks=2, seed=4)
    index[:] = -1
    counts[:] = 1
    index[..., 0] = 3  # every row selects only the last key block ...
    valid = torch.tensor([150], dtype=torch.int32)  # ... which lies wholly past the valid length
    with torch.no_grad():
        k[:, 150:], v[:, 150:] = float("nan"), float("inf")
        out = _run(backend, q, k, v, index, counts, 64, valid)
    assert torch.equal(out, torch.zeros_like(out))
    index[0, 0, :, 0] = 2  # head 0 now sees keys 128..149 of block 2, next to the NaN padding
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    got = _outputs_and_grads(lambda *t: _run(backend, *t, index, counts, 64, valid), q, k, v, grad_out)
    want = _outputs_and_grads(lambda *t: _reference(*t, index, counts, 64, valid), q, k, v, grad_out)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-5, atol=5e-6)
    assert got[0][:, :, 1].abs().max() == 0 and got[0][:, :, 0].abs().max() > 0
    assert got[2][:, 150:].abs().max() == 0 and got[3][:, 150:].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_parity_rule(dtype):
    q, k, v, index, counts, valid = _case(2, 2, 200, 170, 32, 32, dtype=dtype, valid=[170, 101], seed=5)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = _outputs_and_grads(lambda *t: _gather(*t, index, counts, 32, valid), q, k, v, grad_out)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    exact = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, 32, valid), q32, k32, v32, grad_out.float()
    )
    plain = _outputs_and_grads(
        lambda *t: _reference(*t, index, counts, 32, valid, compute_dtype=dtype), q, k, v, grad_out
    )
    for name, g, e, p in zip(("out", "dq", "dk", "dv"), got, exact, plain):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        err = (g.float() - e).abs().max().item()
        plain_err = (p.float() - e).abs().max().item()
        assert err <= 2 * plain_err + _FLOORS[dtype], f"{name}: {err:.2e} > 2 * {plain_err:.2e} + floor"


@needs_cpp
def test_the_kernel_builds_where_the_tools_exist():
    assert cpp.cpp_kernel_error() is None
    assert get_block_sparse_backend("cpp").environment_reasons() == []


@needs_cpp
def test_long_rows_cross_several_key_groups():
    """More selected keys than one online-softmax step (512): the running max and rescale matter."""
    gen = torch.Generator().manual_seed(7)
    q = (3.0 * torch.randn(1, 128, 2, 32, generator=gen)).requires_grad_()  # peaked softmax
    k, v = (torch.randn(1, 2048, 2, 32, generator=gen).requires_grad_() for _ in range(2))
    index, counts = random_block_index(1, 2, 2, 32, max_blocks=32, generator=gen)  # 2048 keys per row
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    got = _outputs_and_grads(lambda *t: _run("cpp", *t, index, counts, 64, None), q, k, v, grad_out)
    want = _outputs_and_grads(lambda *t: _reference(*t, index, counts, 64, None), q, k, v, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=5e-6)


@needs_cpp
def test_strided_inputs_and_int64_index():
    """q/k/v as views of a [B, H, L, D] tensor (VSA's layout) and an int64 index give the same result."""
    q, k, v, index, counts, _ = _case(2, 3, 130, 130, 16, 32, seed=2)
    with torch.no_grad():
        views = [t.detach().transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]
        assert not views[0].is_contiguous()
        want = _run("cpp", q, k, v, index, counts, 32, None)
        got = _run("cpp", *views, index.long(), counts.long(), 32, None)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_cpp
def test_backward_is_deterministic():
    q, k, v, index, counts, valid = _case(2, 2, 300, 300, 16, 32, valid=[300, 211], seed=3)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(4))
    first = _outputs_and_grads(lambda *t: _run("cpp", *t, index, counts, 32, valid), q, k, v, grad_out)
    second = _outputs_and_grads(lambda *t: _run("cpp", *t, index, counts, 32, valid), q, k, v, grad_out)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_cpp
def test_automatic_choice_capabilities_and_refusals():
    q, k, v, index, counts, _ = _case(1, 1, 64, 64, 8, 32)
    problem = validate_block_sparse_inputs(q, k, v, index, counts, block_size=32).problem
    assert resolve_block_sparse_backend(problem, None).name == AUTO_PRIORITY["cpu"][0] == "cpp"
    with torch.no_grad():
        half = validate_block_sparse_inputs(q.half(), k.half(), v.half(), index, counts, block_size=32)
    assert resolve_block_sparse_backend(half.problem, None).name == "gather"  # fp16: not ours
    reasons = get_block_sparse_backend("cpp").not_supported_reasons(half.problem)
    assert any("dtype float16 not supported on cpu (supports float32)" in r for r in reasons), reasons
    caps = block_sparse_backend_capabilities()["cpp"]
    assert caps["backward"] == "cpu" and caps["devices/dtypes"] == "cpu: float32"


@needs_cpp
def test_switch_off_variable(monkeypatch):
    monkeypatch.setenv(cpp.DISABLE_ENV, "1")
    assert "switched off" in cpp._missing_tools()
    monkeypatch.setenv(cpp.DISABLE_ENV, "0")
    assert cpp._missing_tools() is None


@needs_cpp
def test_extension_name_tracks_source_flags_and_cpu(monkeypatch):
    name = cpp._extension_name()
    assert name.startswith("skyreels_block_sparse_cpu_") and name == cpp._extension_name()
    monkeypatch.setattr(cpp, "_cpu_fingerprint", lambda: "another cpu")
    assert cpp._extension_name() != name
    monkeypatch.undo()
    monkeypatch.setattr(cpp, "_CFLAGS", (*cpp._CFLAGS, "-DEXTRA"))
    assert cpp._extension_name() != name


@needs_cpp
def test_fake_ops_give_shapes_for_tracing():
    assert cpp.cpp_kernel_error() is None
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k = torch.empty(2, 70, 3, 16), torch.empty(2, 90, 3, 16)
        index, counts = torch.zeros(2, 3, 2, 1, dtype=torch.int32), torch.ones(2, 3, 2, dtype=torch.int32)
        valid = torch.full((2,), 90, dtype=torch.int32)
        out, lse = torch.ops.skyreels_block_sparse_cpu.forward(q, k, k, index, counts, valid, 64, 0.25)
        assert out.shape == (2, 70, 3, 16) and lse.shape == (2, 3, 70)


def test_without_the_cpp_kernel_fp32_goes_to_gather(monkeypatch):
    from skyreels_attention.block_sparse import backends

    monkeypatch.setattr(backends, "cpp_kernel_error", lambda: "no C++ compiler (test)")
    q, k, v, index, counts, _ = _case(1, 1, 64, 64, 8, 32)
    problem = validate_block_sparse_inputs(q, k, v, index, counts, block_size=32).problem
    assert AUTO_PRIORITY["cpu"] == ("cpp", "gather", "torch")
    assert resolve_block_sparse_backend(problem, None).name == "gather"
    assert get_block_sparse_backend("cpp").not_supported_reasons(problem) == ["no C++ compiler (test)"]


@needs_cpp
def test_expanded_inputs_are_copied_not_misread():
    """A view broadcast along L (token stride 0 < D) is not a valid BLAS matrix: it must be copied."""
    q, k, v, index, counts, _ = _case(2, 2, 130, 130, 16, 32, seed=9)
    with torch.no_grad():
        k_row = k.detach()[:, :1].expand_as(k)
        v_row = v.detach()[:, :1].expand_as(v)
        q_row = q.detach()[:, :1].expand_as(q)
        assert k_row.stride(1) == 0
        for args in ((q, k_row, v_row), (q_row, k, v)):
            got = _run("cpp", *args, index, counts, 32, None)
            want = _reference(*(a.contiguous() for a in args), index, counts, 32, None)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-6)


@needs_cpp
def test_the_raw_ops_check_shapes_instead_of_reading_out_of_bounds():
    """The registered torch ops are public: mismatched shapes raise instead of crashing."""
    assert cpp.cpp_kernel_error() is None
    q, k = torch.randn(4, 64, 2, 16), torch.randn(1, 64, 2, 16)
    index = torch.zeros(4, 2, 1, 1, dtype=torch.int32)
    counts = torch.ones(4, 2, 1, dtype=torch.int32)
    valid = torch.full((4,), 64, dtype=torch.int32)
    ops = torch.ops.skyreels_block_sparse_cpu
    with pytest.raises(RuntimeError, match="k/v must be"):
        ops.forward(q, k, k, index, counts, valid, 64, 0.25)
    with pytest.raises(RuntimeError, match="block_index must be"):
        ops.forward(q, q, q, index[:1], counts, valid, 64, 0.25)
    out, lse = ops.forward(q, q, q, index, counts, valid, 64, 0.25)
    delta = torch.zeros_like(lse)
    with pytest.raises(RuntimeError, match="lse and delta must be"):
        ops.backward(out, q, q, q, lse[:1], delta, index, counts, index, counts, valid, 64, 0.25)
    with pytest.raises(RuntimeError, match="grad_out must have q's shape"):
        ops.backward(out[:1], q, q, q, lse, delta, index, counts, index, counts, valid, 64, 0.25)


@needs_cpp
def test_torch_compile_traces_the_cpp_backend_in_one_graph():
    """fullgraph=True: no graph break (the kernel's build status is a compile-time constant, the
    ops have fake implementations); forward and gradients equal eager."""
    q, k, v, index, counts, valid = _case(1, 2, 96, 96, 16, 32, valid=[80], seed=12)

    def fn(q, k, v):
        return block_sparse_attention(
            q, k, v, index, counts, block_size=32, kv_valid_lengths=valid, backend="cpp"
        )

    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    eager = _outputs_and_grads(fn, q, k, v, grad_out)
    compiled = _outputs_and_grads(torch.compile(fn, fullgraph=True), q, k, v, grad_out)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

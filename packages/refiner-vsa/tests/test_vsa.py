"""VSA against its dense reference, dense attention, a dense masked formulation, and other backends."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_attention import DenseMask, KeyPaddingMask, attention, value_checks
from skyreels_attention.block_sparse import BlockSparseBackendError, block_sparse_backend_status
from skyreels_refiner_vsa import (
    VideoSparseAttention,
    VSAConfig,
    cube_tiling,
    selected_block_table,
    video_sparse_attention,
    video_sparse_attention_reference,
    vsa_token_mask,
)
from skyreels_refiner_vsa.coarse import coarse_attention
from skyreels_refiner_vsa.sparse_attention import check_vsa_inputs

ODD_GRIDS = [(5, 6, 7), (3, 9, 5), (4, 4, 8)]


def _run(fn, inputs, grid, keep, **kwargs):
    return fn(**inputs, tiling=cube_tiling(grid), keep=keep, **kwargs)


def _grads(out, tensors, seed=1):
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in out if o is not None)
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("grid", ODD_GRIDS)
@pytest.mark.parametrize("text", [0, 9, 70])
@pytest.mark.parametrize("keep", [1, 2])
def test_matches_reference_forward_and_gradients(make_inputs, grid, text, keep):
    inputs = make_inputs(grid, text=text)
    leaves = [v for k, v in inputs.items() if k != "text_valid_lengths"]
    for leaf in leaves:
        leaf.requires_grad_(True)
    out = _run(video_sparse_attention, inputs, grid, keep)
    ref = _run(video_sparse_attention_reference, inputs, grid, keep)
    torch.testing.assert_close(out.video, ref.video, rtol=1e-10, atol=1e-10)
    if text:
        torch.testing.assert_close(out.text, ref.text, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(out, leaves), _grads(ref, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_matches_reference_in_float32(make_inputs):
    inputs = make_inputs((5, 6, 7), text=9, dtype=torch.float32, seed=3)
    out = _run(video_sparse_attention, inputs, (5, 6, 7), 2)
    ref = _run(video_sparse_attention_reference, inputs, (5, 6, 7), 2)
    torch.testing.assert_close(out.video, ref.video, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.text, ref.text, rtol=1e-5, atol=1e-5)


def test_sparsity_zero_and_zero_gate_equal_dense_joint_attention(make_inputs):
    grid = (5, 6, 7)
    x = make_inputs(grid, text=9, batch=2, heads=4, head_dim=16, dtype=torch.float32)
    vsa = VideoSparseAttention(dim=64, num_heads=4, config=VSAConfig(sparsity=0.0))
    assert torch.count_nonzero(vsa.gate.weight) == torch.count_nonzero(vsa.gate.bias) == 0
    gate_input = torch.randn(2, 210, 64)
    out = vsa(
        x["video_q"], x["video_k"], x["video_v"], grid=grid, gate_input=gate_input,
        text_q=x["text_q"], text_k=x["text_k"], text_v=x["text_v"],
        text_valid_lengths=x["text_valid_lengths"],
    )  # fmt: skip
    dense = attention(
        torch.cat([x["video_q"], x["text_q"]], 1),
        torch.cat([x["video_k"], x["text_k"]], 1),
        torch.cat([x["video_v"], x["text_v"]], 1),
        mask=KeyPaddingMask(valid_lengths=x["text_valid_lengths"] + 210),
    )
    torch.testing.assert_close(out.video, dense[:, :210], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.text, dense[:, 210:], rtol=1e-5, atol=1e-5)
    # A non-zero sparsity really drops keys (so the comparison above can fail).
    vsa.set_sparsity(0.75)
    sparse = vsa(x["video_q"], x["video_k"], x["video_v"], grid=grid, gate_input=gate_input)
    assert (sparse.video - out.video).abs().max() > 1e-2


def test_text_is_dense_against_a_dense_masked_attention(make_inputs):
    """Video queries: selected video blocks + every real text key; text queries: every real key."""
    grid, keep = (4, 8, 9), 1  # 288 tokens: 5 blocks, the last with 32 tokens shared with text
    x = make_inputs(grid, text=20, dtype=torch.float32, seed=5)
    tiling = cube_tiling(grid)
    out = video_sparse_attention(**{k: v for k, v in x.items() if k != "gate"}, tiling=tiling, keep=keep)

    # The same rule written as one dense boolean mask over [video; text] for the attention package.
    scale = 1 / math.sqrt(16)
    logits = coarse_attention(*(tiling.tile(x[f"video_{n}"]) for n in "qkv"), tiling, scale).logits
    table = selected_block_table(logits, keep, num_video_tokens=288, has_text=True, block_size=64)
    video_rows = vsa_token_mask(table, tiling, 20, x["text_valid_lengths"])  # [B, H, N, N + Lt]
    text_rows = torch.ones(2, 2, 20, 308, dtype=torch.bool)
    text_rows[..., 288:] = video_rows[:, :, :1, 288:]
    mask = DenseMask(mask=torch.cat([video_rows, text_rows], dim=2))
    q, k, v = (torch.cat([x[f"video_{n}"], x[f"text_{n}"]], 1) for n in "qkv")
    dense = attention(q, k, v, mask=mask, backend="sdpa")
    torch.testing.assert_close(out.video, dense[:, :288], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.text, dense[:, 288:], rtol=1e-5, atol=1e-5)
    # Each video query block sees 1 chosen block + the forced tail block + 20 (10 padded) text keys.
    per_row = video_rows.sum(-1)
    assert per_row.max() <= 64 + 32 + 20 and per_row[1].max() <= 64 + 32 + 10
    assert (table.sum(-1) == 2).all() and table[..., -1].all()


def test_text_values_reach_every_video_query_and_unselected_blocks_do_not(make_inputs):
    grid = (4, 8, 8)  # 4 full cubes, no shared tail
    x = make_inputs(grid, text=8, batch=1, dtype=torch.float64, padded=False)
    tiling = cube_tiling(grid)
    base = video_sparse_attention(**{k: v for k, v in x.items() if k != "gate"}, tiling=tiling, keep=1)
    bumped = dict(x, text_v=x["text_v"] + 1.0)
    moved = video_sparse_attention(**{k: v for k, v in bumped.items() if k != "gate"}, tiling=tiling, keep=1)
    assert ((moved.video - base.video).abs().amax(-1) > 1e-6).all()
    # Change the values of one video block: only query blocks that selected it move.
    logits = coarse_attention(*(tiling.tile(x[f"video_{n}"]) for n in "qkv"), tiling, 0.25).logits
    chosen = logits.argmax(-1)[0, 0]  # head 0: the one block each query block keeps
    target = int(chosen[0])
    v = x["video_v"].clone()
    v[:, tiling.block_of_token == target] += 1.0
    moved = video_sparse_attention(
        **{**{k: w for k, w in x.items() if k != "gate"}, "video_v": v}, tiling=tiling, keep=1
    )
    changed = (moved.video - base.video)[0, :, 0].abs().amax(-1) > 1e-9  # per token, head 0
    for block in range(tiling.num_blocks):
        tokens = tiling.block_of_token == block
        assert bool(changed[tokens].all()) == (int(chosen[block]) == target)


@pytest.mark.skipif(bool(block_sparse_backend_status()["triton"]), reason="triton backend unavailable")
@pytest.mark.skipif(
    bool(block_sparse_backend_status()["cpp"]), reason="the fp32 cpp fine stage cannot be built here"
)
def test_coarse_stage_and_combine_stay_float32_under_bf16_autocast(make_inputs):
    """Lightning's "bf16-mixed" runs under torch.autocast: the coarse stage and the gated combine opt
    out. With the fine stage in our fp32 cpp kernel (autocast does not touch it) the whole video
    output then equals the float32 computation on the same bf16-rounded inputs."""
    grid = (8, 8, 8)  # 8 blocks; keep 2
    x = make_inputs(grid, text=9, dtype=torch.float32, seed=2)
    x = {k: v.bfloat16().float() if v.is_floating_point() else v for k, v in x.items()}
    tiling = cube_tiling(grid)
    q, k, v = (tiling.tile(x[name]) for name in ("video_q", "video_k", "video_v"))
    exact = coarse_attention(q, k, v, tiling, 0.25)
    expected = _run(video_sparse_attention, x, grid, 2, backend="cpp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse = coarse_attention(q, k, v, tiling, 0.25)
        out = _run(video_sparse_attention, x, grid, 2, backend="cpp")
    assert coarse.logits.dtype == coarse.output.dtype == torch.float32
    assert torch.equal(coarse.logits, exact.logits) and torch.equal(coarse.output, exact.output)
    assert out.video.dtype == torch.float32
    torch.testing.assert_close(out.video, expected.video, rtol=1e-6, atol=1e-6)


def test_triton_backend_matches_torch_forward_and_backward(make_inputs):
    grid = (3, 5, 6)  # 90 tokens: 2 blocks, text shares the second
    x = make_inputs(grid, text=5, batch=1, heads=2, head_dim=16, dtype=torch.float32, seed=7)
    leaves = [x[n] for n in ("video_q", "video_k", "video_v", "gate", "text_k")]
    for leaf in leaves:
        leaf.requires_grad_(True)
    outs = [_run(video_sparse_attention, x, grid, 1, backend=b) for b in ("torch", "triton")]
    torch.testing.assert_close(outs[1].video, outs[0].video, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(outs[1], leaves), _grads(outs[0], leaves)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(bool(block_sparse_backend_status()["flex"]), reason="flex backend unavailable")
def test_flex_backend_matches_torch_forward(make_inputs):
    grid = (5, 6, 7)
    x = make_inputs(grid, text=9, batch=1, dtype=torch.float32, seed=2)
    outs = [_run(video_sparse_attention, x, grid, 2, backend=b) for b in ("torch", "flex")]
    torch.testing.assert_close(outs[1].video, outs[0].video, rtol=1e-5, atol=1e-5)
    if not torch.cuda.is_available():
        x["video_q"].requires_grad_(True)
        with pytest.raises(BlockSparseBackendError, match="no backward pass on cpu"):
            _run(video_sparse_attention, x, grid, 2, backend="flex")


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"video_q": torch.zeros(2, 200, 2, 16)}, ValueError, r"video_q must have N = t·h·w = 210 tokens"),
        ({"video_k": torch.zeros(2, 210, 2, 8)}, ValueError, "video_k must match video_q"),
        (
            {"video_v": torch.zeros(2, 210, 2, 16, dtype=torch.int64)},
            TypeError,
            "video_v must be a float tensor",
        ),
        ({"text_k": None}, ValueError, "text_k must be"),
        ({"text_q": torch.zeros(2, 9, 3, 16)}, ValueError, "text_q must be"),
        (
            {"text_valid_lengths": torch.tensor([1.0, 2.0])},
            TypeError,
            r"text_valid_lengths must have an integer \(not bool\) dtype, got torch.float32",
        ),
        (
            {"text_valid_lengths": torch.tensor([True, True])},
            TypeError,
            r"text_valid_lengths must have an integer \(not bool\) dtype, got torch.bool",
        ),
        ({"text_valid_lengths": [9, 9]}, TypeError, "text_valid_lengths must be an integer tensor"),
        (
            {"text_valid_lengths": torch.tensor([9])},
            ValueError,
            r"text_valid_lengths must be \[B=2\], got \(1,\)",
        ),
        (
            {"text_valid_lengths": torch.tensor([9, -3])},
            ValueError,
            r"text_valid_lengths must lie in \[0, Lt=9\] \(text_q's length\), got \[9, -3\]",
        ),
        (
            {"text_valid_lengths": torch.tensor([10, 9], dtype=torch.int32)},
            ValueError,
            r"text_valid_lengths must lie in \[0, Lt=9\] \(text_q's length\), got \[10, 9\]",
        ),
        ({"gate": torch.zeros(2, 210, 2)}, ValueError, "gate must be"),
    ],
)
def test_bad_inputs_name_the_argument(make_inputs, change, error, message):
    x = make_inputs((5, 6, 7), text=9, dtype=torch.float32)
    x.update(change)
    with pytest.raises(error, match=message):
        _run(video_sparse_attention, x, (5, 6, 7), 1)


def test_text_valid_lengths_at_the_ends_of_the_range_match_the_reference(make_inputs):
    x = make_inputs((5, 6, 7), text=9, dtype=torch.float64)
    for lengths in ([0, 9], [9, 0]):
        x["text_valid_lengths"] = torch.tensor(lengths, dtype=torch.int16)
        out = _run(video_sparse_attention, x, (5, 6, 7), 2)
        ref = _run(video_sparse_attention_reference, x, (5, 6, 7), 2)
        torch.testing.assert_close(out.video, ref.video, rtol=1e-10, atol=1e-10)


def test_text_valid_lengths_range_check_follows_the_value_check_switch(make_inputs):
    """The range check reads values (a host sync): skipped where skyreels-attention's switch is off."""
    x = make_inputs((5, 6, 7), text=9, dtype=torch.float32)
    args = (x["video_q"], x["video_k"], x["video_v"], cube_tiling((5, 6, 7)))
    text = (x["text_q"], x["text_k"], x["text_v"])
    negative = torch.tensor([9, -3])
    with value_checks(False):
        check_vsa_inputs(*args, text, negative, x["gate"])  # no error: values are not read
        with pytest.raises(TypeError, match="integer"):  # dtype checks are free and always run
            check_vsa_inputs(*args, text, negative.bool(), x["gate"])
    with pytest.raises(ValueError, match=r"text_valid_lengths must lie in \[0, Lt=9\]"):
        check_vsa_inputs(*args, text, negative, x["gate"])


def test_text_lengths_without_text_and_bad_keep_raise(make_inputs):
    x = make_inputs((5, 6, 7), dtype=torch.float32)
    with pytest.raises(ValueError, match="text_valid_lengths was given without"):
        _run(video_sparse_attention, dict(x, text_valid_lengths=torch.tensor([1, 1])), (5, 6, 7), 1)
    with pytest.raises(ValueError, match="keep must be a positive int"):
        _run(video_sparse_attention, x, (5, 6, 7), 0)


def test_module_configuration_errors(monkeypatch):
    with pytest.raises(ValueError, match="give exactly one of sparsity and top_k"):
        VSAConfig(sparsity=0.5, top_k=3)
    with pytest.raises(ValueError, match="cube volume must be a power of two >= 16"):
        VSAConfig(cube=(3, 4, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        VSAConfig(backend="cuda")
    with pytest.raises(ValueError, match="dim must be divisible by num_heads"):
        VideoSparseAttention(dim=30, num_heads=4)
    fixed = VideoSparseAttention(dim=32, num_heads=2, config=VSAConfig(sparsity=None, top_k=2))
    assert fixed.keep_blocks(10) == 2
    with pytest.raises(ValueError, match="set_sparsity needs a sparsity config"):
        fixed.set_sparsity(0.5)
    with pytest.raises(ValueError, match="gate_input must be"):
        fixed(
            *(torch.zeros(1, 64, 2, 16) for _ in range(3)), grid=(4, 4, 4), gate_input=torch.zeros(1, 64, 16)
        )

    class _Missing:
        def environment_reasons(self):
            return ["no CUDA device"]

    monkeypatch.setattr("skyreels_refiner_vsa.vsa_module.get_block_sparse_backend", lambda name: _Missing())
    with pytest.raises(BlockSparseBackendError, match="VSA backend 'triton' cannot run on this machine"):
        VideoSparseAttention(dim=32, num_heads=2, config=VSAConfig(backend="triton"))


def test_attend_on_a_head_chunk_equals_those_heads_of_the_full_forward():
    """What sequence parallelism relies on: the gate is per token (``gate_values``) and the block
    selection per head, so ``attend`` on any chunk of heads gives exactly those heads of ``forward``."""
    torch.manual_seed(0)
    vsa = VideoSparseAttention(
        dim=64, num_heads=4, config=VSAConfig(sparsity=0.5, cube=(1, 4, 4), backend="torch")
    )
    with torch.no_grad():
        vsa.gate.weight.normal_(std=0.1)
    q, k, v = (torch.randn(2, 64, 4, 16) for _ in range(3))
    text = [torch.randn(2, 5, 4, 16) for _ in range(3)]
    lengths = torch.tensor([3, 5])
    gate_input = torch.randn(2, 64, 64)
    full = vsa(q, k, v, grid=(2, 4, 8), gate_input=gate_input, text_q=text[0], text_k=text[1], text_v=text[2],
               text_valid_lengths=lengths)  # fmt: skip
    gate = vsa.gate_values(gate_input)
    assert gate.shape == (2, 64, 4, 16)
    heads = slice(2, 4)
    chunk = vsa.attend(
        q[:, :, heads], k[:, :, heads], v[:, :, heads], grid=(2, 4, 8), gate=gate[:, :, heads],
        text_q=text[0][:, :, heads], text_k=text[1][:, :, heads], text_v=text[2][:, :, heads],
        text_valid_lengths=lengths,
    )  # fmt: skip
    torch.testing.assert_close(chunk.video, full.video[:, :, heads], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunk.text, full.text[:, :, heads], rtol=1e-6, atol=1e-6)
    # The gate matters (a zero gate gives another result), and a gate of another shape is refused.
    zero = vsa.attend(q, k, v, grid=(2, 4, 8), gate=torch.zeros_like(gate))
    plain = vsa.attend(q, k, v, grid=(2, 4, 8), gate=gate)
    assert not torch.allclose(zero.video, plain.video, atol=1e-4)
    with pytest.raises(ValueError, match="gate must be"):
        vsa.attend(q, k, v, grid=(2, 4, 8), gate=gate[:, :, :2])

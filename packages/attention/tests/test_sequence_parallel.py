"""Ulysses sequence parallelism against single-process attention.

The two-rank checks run in two subprocesses that execute this very file (`python <file> RANK
WORLD INIT_URI`), because pytest's importlib mode makes test modules unimportable by name in
spawned children. Each worker runs every scenario, compares outputs and gradients against the
single-process computation with the package's fp32 reference (`naive_attention`), and exits
non-zero if any comparison failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from skyreels_attention.backends import naive_attention
from skyreels_attention.masks import DenseMask, KeyPaddingMask
from skyreels_attention.sequence_parallel import (
    UlyssesAttention,
    all_gather,
    all_to_all,
    gather_sequence,
    reduce_scatter,
    shard_length,
    shard_sequence,
    ulysses_attention,
    ulysses_cross_attention,
)

TOL = {"atol": 2e-6, "rtol": 2e-5}


# --- the single-process computation and one scenario, shared by both groups ----------------------


def joint_reference(q, k, v, rq=None, rk=None, rv=None, text_lengths=None, scale=None):
    """Single-process joint attention over [video ; text]; returns (video_out, text_out | None)."""
    L = q.shape[1]
    if rk is None:
        return naive_attention(q, k, v, None, scale), None
    qj = q if rq is None else torch.cat((q, rq), 1)
    lengths = text_lengths if text_lengths is not None else torch.full((q.shape[0],), rk.shape[1])
    out = naive_attention(
        qj, torch.cat((k, rk), 1), torch.cat((v, rv), 1), KeyPaddingMask(lengths + L), scale
    )
    return out[:, :L], (None if rq is None else out[:, L:])


def run_scenario(
    group: dist.ProcessGroup,
    *,
    L: int,
    Lt: int = 0,
    text_queries: bool = True,
    text_lengths: list[int] | None = None,
    gathered_loss: bool = False,
    scale: float | None = None,
    call: Callable | None = None,
    B: int = 2,
    H: int = 4,
    D: int = 8,
    seed: int = 0,
) -> list[tuple[str, Tensor, Tensor]]:
    """(name, distributed, expected) pairs for outputs and for the gradients of every input.

    Global tensors are built identically on every rank (same seed); each rank shards them itself.
    The per-rank loss is the loss on its own shard (or on the gathered sequence divided by P) plus
    the loss on the replicated outputs divided by P; per-rank gradients of the (replicated) global
    leaves are partial and summed over the group before comparing.
    """
    P = dist.get_world_size(group)
    gen = torch.Generator().manual_seed(seed)
    names = ["q", "k", "v"] + (["rq"] if Lt and text_queries else []) + (["rk", "rv"] if Lt else [])
    shapes = {n: (B, L if n in "qkv" else Lt, H, D) for n in names}
    inputs = {n: torch.randn(shapes[n], generator=gen) for n in names}
    g_video = torch.randn(B, L, H, D, generator=gen)
    g_text = torch.randn(B, Lt, H, D, generator=gen)
    lengths = None if text_lengths is None else torch.tensor(text_lengths)

    ref = {n: t.clone().requires_grad_() for n, t in inputs.items()}
    ref_video, ref_text = joint_reference(
        ref["q"], ref["k"], ref["v"], ref.get("rq"), ref.get("rk"), ref.get("rv"), lengths, scale
    )
    ref_loss = (ref_video * g_video).sum() + (0 if ref_text is None else (ref_text * g_text).sum())
    ref_loss.backward()

    leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
    q, k, v = (shard_sequence(leaves[n], group=group) for n in "qkv")
    attend = call or ulysses_attention
    out, text_out = attend(
        q,
        k,
        v,
        **({} if call else {"group": group}),
        global_seq_len=L,
        replicated_q=leaves.get("rq"),
        replicated_k=leaves.get("rk"),
        replicated_v=leaves.get("rv"),
        replicated_mask=None if lengths is None else KeyPaddingMask(lengths),
        scale=scale,
    )
    if gathered_loss:
        loss = (gather_sequence(out, group=group, global_seq_len=L) * g_video).sum() / P
    else:
        loss = (out * shard_sequence(g_video, group=group)).sum()
    if text_out is not None:
        loss = loss + (text_out * g_text).sum() / P
    loss.backward()

    pairs = [("out", out, shard_sequence(ref_video.detach(), group=group))]
    if ref_text is not None:
        pairs.append(("replicated_out", text_out, ref_text.detach()))
    for n in names:
        grad = leaves[n].grad.clone()
        dist.all_reduce(grad, group=group)
        pairs.append((f"grad {n}", grad, ref[n].grad))
    return pairs


def run_cross_scenario(group: dist.ProcessGroup, *, L: int, Lq: int, seed: int = 5):
    """Replicated queries [B, Lq, H, D] reading a sharded sequence: (name, distributed, expected)."""
    P = dist.get_world_size(group)
    gen = torch.Generator().manual_seed(seed)
    inputs = {"q": torch.randn(2, Lq, 4, 8, generator=gen)}
    inputs.update({n: torch.randn(2, L, 4, 8, generator=gen) for n in "kv"})
    g = torch.randn(2, Lq, 4, 8, generator=gen)
    ref = {n: t.clone().requires_grad_() for n, t in inputs.items()}
    ref_out = naive_attention(ref["q"], ref["k"], ref["v"])
    (ref_out * g).sum().backward()
    leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
    k, v = (shard_sequence(leaves[n], group=group) for n in "kv")
    out = ulysses_cross_attention(leaves["q"], k, v, group=group, global_seq_len=L)
    ((out * g).sum() / P).backward()
    pairs = [("cross out", out, ref_out.detach())]
    for n in "qkv":
        grad = leaves[n].grad.clone()
        dist.all_reduce(grad, group=group)
        pairs.append((f"cross grad {n}", grad, ref[n].grad))
    return pairs


SCENARIOS: dict[str, dict] = {
    "even L, no replicated tokens": {"L": 12},
    "replicated q/k/v with text padding": {"L": 12, "Lt": 5, "text_lengths": [5, 2]},
    "uneven L, text padding, gathered loss": {
        "L": 11,
        "Lt": 5,
        "text_lengths": [3, 5],
        "gathered_loss": True,
    },
    "uneven L, replicated keys only, scale": {"L": 9, "Lt": 3, "text_queries": False, "scale": 0.3},
}


# --- two ranks, in subprocesses -------------------------------------------------------------------


def _worker(rank: int, world: int, init_uri: str) -> int:
    dist.init_process_group(
        "gloo", init_method=init_uri, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    group = dist.group.WORLD
    failures: list[str] = []
    checks = 0

    def compare(label: str, actual: Tensor, expected: Tensor) -> None:
        nonlocal checks
        checks += 1
        try:
            torch.testing.assert_close(actual, expected, **TOL)
        except AssertionError as err:
            failures.append(f"[rank {rank}] {label}: {err}")

    for name, kwargs in SCENARIOS.items():
        for label, actual, expected in run_scenario(group, **kwargs):
            compare(f"{name}: {label}", actual, expected)
    # The module form with a named backend, and a custom attention callable.
    module = UlyssesAttention(group=group, backend="reference")
    for label, actual, expected in run_scenario(group, L=8, Lt=4, text_lengths=[1, 4], call=module, seed=1):
        compare(f"UlyssesAttention(backend='reference'): {label}", actual, expected)
    custom = UlyssesAttention(group=group, attention_fn=naive_attention)
    for label, actual, expected in run_scenario(group, L=7, Lt=2, call=custom, seed=2):
        compare(f"UlyssesAttention(attention_fn=naive_attention): {label}", actual, expected)

    for label, actual, expected in run_cross_scenario(group, L=9, Lq=6):
        compare(f"ulysses_cross_attention, uneven L: {label}", actual, expected)

    # Collectives on their own: values, and gradients as adjoints (<A x, g> = <x, A^T g>).
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6) + 1000 * rank
    x.requires_grad_()
    swapped = all_to_all(x, group=group, scatter_dim=2, gather_dim=1)  # [2, 8, 3]
    expected = torch.cat([x.detach() - 1000 * rank + 1000 * r for r in range(world)], 1)[
        ..., rank * 3 : rank * 3 + 3
    ]
    compare("all_to_all values", swapped, expected)
    back = all_to_all(swapped, group=group, scatter_dim=1, gather_dim=2)
    compare("all_to_all round trip", back, x.detach())
    summed = reduce_scatter(x, group=group, dim=1)  # [2, 2, 6]
    total = sum(x.detach() - 1000 * rank + 1000 * r for r in range(world))
    compare("reduce_scatter values", summed, total[:, rank * 2 : rank * 2 + 2])
    summed.backward(torch.full_like(summed, float(rank + 1)))
    compare(
        "reduce_scatter backward = all_gather",
        x.grad,
        torch.cat([torch.full((2, 2, 6), float(r + 1)) for r in range(world)], 1),
    )
    gathered = all_gather(x.detach()[:, :1], group=group, dim=0)
    compare(
        "all_gather values",
        gathered,
        torch.cat([x.detach()[:, :1] - 1000 * rank + 1000 * r for r in range(world)]),
    )

    # Bad inputs raise before any communication, identically on every rank.
    q3 = torch.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match="H=3 must be divisible by the sequence-parallel degree P=2"):
        ulysses_attention(q3, q3, q3, group=group)
    with pytest.raises(ValueError, match="k: the number of heads H=3 must be divisible"):
        ulysses_cross_attention(q3, q3, q3, group=group)
    with pytest.raises(ValueError, match="must be divisible by the group size P=2"):
        all_to_all(q3, group=group, scatter_dim=2, gather_dim=1)
    with pytest.raises(ValueError, match=r"global_seq_len: expected an int in \[1, P·Ls = 8\]"):
        ulysses_attention(
            torch.randn(1, 4, 2, 8), *[torch.randn(1, 4, 2, 8)] * 2, group=group, global_seq_len=9
        )
    checks += 4

    dist.barrier(group)
    dist.destroy_process_group()
    print("\n".join(failures) if failures else f"rank {rank}: {checks} checks passed")
    return 1 if failures else 0


@pytest.mark.distributed
def test_two_ranks_match_single_process(tmp_path: Path) -> None:
    init_uri = (tmp_path / "rendezvous").as_uri()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), "2", init_uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=150)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs.append("TIMEOUT\n" + proc.communicate()[0])
    report = "\n".join(
        f"--- rank {r} (exit {p.returncode}) ---\n{o}" for r, (p, o) in enumerate(zip(procs, outputs))
    )
    assert all(p.returncode == 0 for p in procs), report
    assert all("checks passed" in o for o in outputs), report


# --- one rank, in process -------------------------------------------------------------------------


@pytest.fixture
def single_rank_group(tmp_path: Path) -> Iterator[dist.ProcessGroup]:
    if dist.is_initialized():
        pytest.skip("a default process group already exists in this process")
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_uninitialised_distributed_raises() -> None:
    if dist.is_initialized():
        pytest.skip("a default process group already exists in this process")
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match=r"group: torch\.distributed is not initialised"):
        ulysses_attention(q, q, q, group=None)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_single_rank_matches_reference(single_rank_group: dist.ProcessGroup, name: str) -> None:
    for label, actual, expected in run_scenario(single_rank_group, **SCENARIOS[name]):
        torch.testing.assert_close(actual, expected, **TOL, msg=lambda m, label=label: f"{label}: {m}")


def test_single_rank_cross_attention(single_rank_group: dist.ProcessGroup) -> None:
    for label, actual, expected in run_cross_scenario(single_rank_group, L=7, Lq=3):
        torch.testing.assert_close(actual, expected, **TOL, msg=lambda m, label=label: f"{label}: {m}")
    q, k = torch.randn(2, 3, 2, 8), torch.randn(2, 5, 2, 8)
    with pytest.raises(ValueError, match=r"q, k: expected the same B, H, D"):
        ulysses_cross_attention(q[:1], k, k, group=single_rank_group)
    with pytest.raises(ValueError, match=r"v: expected shape \[2, 5, 2, 8\]"):
        ulysses_cross_attention(q, k, k[:, :4], group=single_rank_group)


def test_padding_inside_the_shard(single_rank_group: dist.ProcessGroup) -> None:
    """global_seq_len < Ls on one rank: padded keys are masked, padded rows are zero with no gradient."""
    gen = torch.Generator().manual_seed(3)
    q, k, v, rk, rv = (torch.randn(2, n, 2, 4, generator=gen) for n in (7, 7, 7, 3, 3))
    q.requires_grad_()
    k.requires_grad_()
    lengths = torch.tensor([2, 0])
    out, text_out = ulysses_attention(
        q,
        k,
        v,
        group=single_rank_group,
        global_seq_len=5,
        replicated_k=rk,
        replicated_v=rv,
        replicated_mask=KeyPaddingMask(lengths),
    )
    assert text_out is None
    ref_video, _ = joint_reference(q[:, :5], k[:, :5], v[:, :5], None, rk, rv, lengths)
    torch.testing.assert_close(out[:, :5], ref_video, **TOL)
    assert torch.equal(out[:, 5:], torch.zeros_like(out[:, 5:]))
    out.sum().backward()
    assert torch.equal(q.grad[:, 5:], torch.zeros_like(q.grad[:, 5:]))
    assert torch.equal(k.grad[:, 5:], torch.zeros_like(k.grad[:, 5:]))
    assert q.grad[:, :5].abs().sum() > 0


def test_keys_are_ordered_so_valid_keys_form_a_prefix(single_rank_group: dist.ProcessGroup) -> None:
    seen = {}

    def recording_attention(q, k, v, *, mask, scale):
        seen.update(lq=q.shape[1], lk=k.shape[1], lengths=mask.valid_lengths.tolist(), k=k)
        return naive_attention(q, k, v, mask, scale)

    k = torch.arange(6.0).reshape(1, 6, 1, 1).expand(2, 6, 2, 4).contiguous()
    rk = 100 + torch.arange(3.0).reshape(1, 3, 1, 1).expand(2, 3, 2, 4)
    ulysses_attention(
        k,
        k,
        k,
        group=single_rank_group,
        global_seq_len=4,
        replicated_q=rk,
        replicated_k=rk,
        replicated_v=rk,
        replicated_mask=KeyPaddingMask(torch.tensor([1, 3])),
        attention_fn=recording_attention,
    )
    assert (seen["lq"], seen["lk"], seen["lengths"]) == (9, 9, [5, 7])
    assert seen["k"][0, :, 0, 0].tolist() == [0, 1, 2, 3, 100, 101, 102, 4, 5]


def test_backends_agree(single_rank_group: dist.ProcessGroup) -> None:
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 6, 2, 8, generator=gen) for _ in range(3))
    rq, rk, rv = (torch.randn(2, 3, 2, 8, generator=gen) for _ in range(3))
    kwargs = {
        "group": single_rank_group,
        "global_seq_len": 5,
        "replicated_q": rq,
        "replicated_k": rk,
        "replicated_v": rv,
        "replicated_mask": KeyPaddingMask(torch.tensor([3, 1])),
    }
    ref = ulysses_attention(q, k, v, backend="reference", **kwargs)
    sdpa = ulysses_attention(q, k, v, backend="sdpa", **kwargs)
    torch.testing.assert_close(sdpa.out, ref.out, **TOL)
    torch.testing.assert_close(sdpa.replicated_out, ref.replicated_out, **TOL)


def test_shard_and_gather_round_trip(single_rank_group: dist.ProcessGroup) -> None:
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(
        gather_sequence(shard_sequence(x, group=single_rank_group), group=single_rank_group), x
    )
    assert [shard_length(L, 4) for L in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="global_seq_len, group_size: expected both >= 1"):
        shard_length(0, 2)
    with pytest.raises(ValueError, match=r"global_seq_len: expected an int in \[1, P·Ls = 5\]"):
        gather_sequence(x, group=single_rank_group, global_seq_len=6)


def _bad_calls(q: Tensor, rk: Tensor) -> list[tuple[type[Exception], str, dict]]:
    return [
        (ValueError, r"k: expected shape \[2, 4, 2, 8\]", {"k": q[:, :3]}),
        (TypeError, "v: expected torch.float32", {"v": q.double()}),
        (ValueError, r"q: expected 4 dims", {"q": q[0], "k": q[0], "v": q[0]}),
        (ValueError, r"global_seq_len: expected an int in \[1, P·Ls = 4\], got 0", {"global_seq_len": 0}),
        (ValueError, "global_seq_len: expected an int", {"global_seq_len": True}),
        (ValueError, "replicated_k, replicated_v: pass both or neither", {"replicated_k": rk}),
        (ValueError, "replicated_q: needs replicated_k", {"replicated_q": rk}),
        (
            ValueError,
            r"replicated_k: expected \[B, Lt >= 1, H, D\]",
            {"replicated_k": rk[:1], "replicated_v": rk[:1]},
        ),
        (ValueError, "replicated_v: expected shape", {"replicated_k": rk, "replicated_v": rk[:, :2]}),
        (
            ValueError,
            "replicated_mask: given without replicated_k",
            {"replicated_mask": KeyPaddingMask(torch.tensor([1, 1]))},
        ),
        (
            TypeError,
            "replicated_mask: expected a KeyPaddingMask",
            {
                "replicated_k": rk,
                "replicated_v": rk,
                "replicated_mask": DenseMask(torch.ones(7, 7, dtype=torch.bool)),
            },
        ),
        (
            ValueError,
            r"replicated_mask.valid_lengths: expected 2 values in \[0, Lt=3\], got \[1, 4\]",
            {"replicated_k": rk, "replicated_v": rk, "replicated_mask": KeyPaddingMask(torch.tensor([1, 4]))},
        ),
        (
            ValueError,
            "backend, attention_fn: give one or neither",
            {"backend": "sdpa", "attention_fn": naive_attention},
        ),
        (TypeError, "group: expected a torch.distributed.ProcessGroup", {"group": "world"}),
    ]


def test_bad_inputs_raise(single_rank_group: dist.ProcessGroup) -> None:
    q, rk = torch.randn(2, 4, 2, 8), torch.randn(2, 3, 2, 8)
    for error, match, overrides in _bad_calls(q, rk):
        kwargs = {"q": q, "k": q, "v": q, "group": single_rank_group, **overrides}
        with pytest.raises(error, match=match):
            ulysses_attention(kwargs.pop("q"), kwargs.pop("k"), kwargs.pop("v"), **kwargs)
    with pytest.raises(ValueError, match="backend: expected one of"):
        UlyssesAttention(group=single_rank_group, backend="nope")


if __name__ == "__main__":
    try:
        exit_code = _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    except Exception:
        # Exit at once so that the peer's next collective fails fast instead of waiting to time out.
        traceback.print_exc()
        exit_code = 1
    sys.stdout.flush()
    sys.exit(exit_code)

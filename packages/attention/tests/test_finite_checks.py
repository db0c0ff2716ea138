"""Finiteness checks of `attention()` and the switch shared with skyreels-mmdit-blocks (issue 14)."""

from __future__ import annotations

import sys

import pytest
import torch

from skyreels_attention import (
    FiniteChecks,
    NonFiniteInputError,
    attention,
    check_finite,
    finite_checks,
    get_finite_checks,
    naive_attention,
    set_finite_checks,
)


def _qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 6, 2, 8, generator=g) for _ in range(3))


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_inputs_raise_naming_the_argument(name, bad):
    q, k, v = _qkv()
    tensors = {"q": q, "k": k, "v": v}
    tensors[name][0, 3, 1, 2] = bad
    with pytest.raises(NonFiniteInputError, match=rf"^{name}: expected finite values") as caught:
        attention(tensors["q"], tensors["k"], tensors["v"])
    assert isinstance(caught.value, ValueError)
    kind = "1 NaN and 0 inf" if bad != bad else "0 NaN and 1 inf"
    assert kind in str(caught.value)


def test_finite_inputs_give_the_reference_result_and_off_lets_nan_through():
    q, k, v = _qkv(1)
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v))
    v[0, 0, 0, 0] = float("nan")
    assert get_finite_checks() is FiniteChecks.CPU
    with finite_checks(FiniteChecks.OFF):
        out = attention(q, k, v)
    assert torch.isnan(out).any()  # unchecked: the NaN spreads, as documented
    assert get_finite_checks() is FiniteChecks.CPU  # restored
    with pytest.raises(NonFiniteInputError):
        attention(q, k, v)


def test_cpu_mode_does_not_read_accelerator_tensors(monkeypatch):
    # A meta tensor stands in for a GPU tensor once the symbolic-tensor exemption is patched out:
    # reading its values would raise, so passing shows it was not read (no host synchronisation on
    # accelerators by default).
    # (the package re-exports the function finite_checks under the module's name: go by sys.modules)
    module = sys.modules["skyreels_attention.finite_checks"]
    monkeypatch.setattr(module, "_is_symbolic", lambda tensor: False)
    check_finite(torch.empty(4, device="meta"), "x")
    with finite_checks(FiniteChecks.ALWAYS), pytest.raises(Exception):  # noqa: B017
        check_finite(torch.empty(4, device="meta"), "x")
    check_finite(torch.tensor([1, 2]), "integers")  # integer tensors cannot hold NaN
    check_finite(None, "absent")


def test_meta_and_fake_tensors_pass_in_every_mode():
    # Shape planning and FLOP counting run the model on meta / fake tensors, which hold no values.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with finite_checks(FiniteChecks.ALWAYS):
        check_finite(torch.empty(4, device="meta"), "meta")
        with FakeTensorMode() as mode:
            fake = mode.from_tensor(torch.full((4,), float("nan")))
            check_finite(fake, "fake")
            check_finite(torch.ones(3) * 2.0, "made under fake mode")
        with pytest.raises(NonFiniteInputError, match="real"):
            check_finite(torch.full((4,), float("nan")), "real")


def test_switch_validates_its_argument():
    with pytest.raises(TypeError, match="mode: expected a FiniteChecks"):
        set_finite_checks(False)  # type: ignore[arg-type]
    assert FiniteChecks("off") is FiniteChecks.OFF


def test_a_sum_that_overflows_is_not_mistaken_for_inf():
    # The fast path sums the tensor; a finite fp16 tensor whose sum overflows takes the exact test.
    large = torch.full((8,), 60000.0, dtype=torch.float16)
    assert torch.isinf(large.sum())
    check_finite(large, "large")
    large[3] = float("nan")
    with pytest.raises(NonFiniteInputError, match="large: expected finite values, got 1 NaN and 0 inf"):
        check_finite(large, "large")

"""Regional compile of the MMDiT blocks reaches every call path (``StagedBlock.compile``).

The joint transformer calls a paired block's ``attention_stage`` and ``feed_forward_stage`` apart (eq. 5
sits between them), so compiling ``forward`` alone (``nn.Module.compile``) would leave those calls
eager. A counting dynamo backend shows that every block's stages run compiled in the joint forward,
with the eager result; a deep copy of a compiled block runs its own weights.
"""

from __future__ import annotations

import copy

import torch

from skyreels_mmdit_blocks import DualStreamBlock, JointAudioVideoTransformer, SingleStreamBlock, joint_preset
from skyreels_mmdit_blocks.block_context import BlockContext


class CountingBackend:
    """A dynamo backend that runs the captured graph eagerly and counts its calls."""

    def __init__(self) -> None:
        self.graphs = 0
        self.calls = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1

        def run(*args: object) -> object:
            self.calls += 1
            return graph(*args)

        return run


def _inputs(config) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "video_latents": torch.randn(2, config.video.in_channels, 3, 4, 4, generator=g),
        "audio_latents": torch.randn(2, config.audio.in_channels, 8, generator=g),
        "timestep": torch.tensor([300.0, 700.0]),
        "text_tokens": torch.randn(2, 5, config.video.text_dim, generator=g),
        "text_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
    }


def test_every_block_stage_runs_compiled_in_the_joint_forward():
    torch.manual_seed(0)
    model = JointAudioVideoTransformer(joint_preset("tiny")).eval()
    inputs = _inputs(model.config)
    with torch.no_grad():
        eager = model(**inputs)
    blocks = [*model.video.blocks, *model.audio.blocks]
    paired = {v for v, _ in model.config.exchange_pairs}
    assert paired, "the tiny preset must pair blocks, or this test checks nothing new"
    backend = CountingBackend()
    for block in blocks:
        block.compile(backend=backend)
        assert block.is_compiled
    with torch.no_grad():
        compiled = model(**inputs)
    torch.testing.assert_close(compiled.video, eager.video, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.audio, eager.audio, rtol=1e-5, atol=1e-6)
    # Every block ran compiled code in the forward: a dual-stream block two graphs (attention, MLPs), a
    # single-stream block one (its feed-forward stage is empty, so dynamo captures no graph for it).
    expected = sum(2 if isinstance(block, DualStreamBlock) else 1 for block in blocks)
    assert backend.calls == expected, (backend.calls, expected)
    # Blocks of one class share their graphs (the weights are graph inputs): fewer graphs than calls.
    assert backend.graphs < expected
    for block in blocks:
        cached = block.__dict__["_stage_cache"]
        assert cached[0] == id(block)


def test_a_deep_copy_of_a_compiled_block_runs_its_own_weights():
    torch.manual_seed(0)
    for block in (DualStreamBlock(dim=32, num_heads=2), SingleStreamBlock(dim=32, num_heads=2)):
        block.compile(backend=CountingBackend())
        g = torch.Generator().manual_seed(2)
        latent, text = torch.randn(1, 6, 32, generator=g), torch.randn(1, 3, 32, generator=g)
        ctx = BlockContext(
            conditioning=torch.randn(1, 32, generator=g),
            rotary=None,
            joint_mask=None,
            text_context=None,
            text_mask=None,
        )
        with torch.no_grad():
            before = block(latent, text, ctx)[0]
            twin = copy.deepcopy(block)
            for p in twin.parameters():
                p.mul_(0.5)
            halved = twin(latent, text, ctx)[0]
            again = block(latent, text, ctx)[0]
        assert twin.is_compiled and twin.__dict__["_stage_cache"][0] == id(twin)
        assert not torch.allclose(halved, before, atol=1e-4)
        torch.testing.assert_close(again, before)
        # A fresh, uncompiled block of the same weights gives the copy's result.
        plain = copy.deepcopy(twin)
        plain.uncompile()
        assert not plain.is_compiled
        with torch.no_grad():
            torch.testing.assert_close(plain(latent, text, ctx)[0], halved, rtol=1e-5, atol=1e-6)

"""Adversarial and feature-matching losses over a list of sub-discriminator outputs.

``"hinge"``: D minimises ``relu(1 - D(real)) + relu(1 + D(fake))``; G minimises ``relu(1 - D(fake))``
(the bounded generator form used by EnCodec/DAC rather than ``-D(fake)``).
``"lsgan"``: D minimises ``(D(real) - 1)^2 + D(fake)^2``; G minimises ``(D(fake) - 1)^2``.
Each term is a mean over logits, averaged over sub-discriminators. Feature matching: mean L1
between the fake and (detached) real feature maps, averaged over layers and sub-discriminators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from skyreels_audio_vae.discriminators import DiscriminatorOutput

__all__ = ["AdversarialLoss", "discriminator_loss", "feature_matching_loss", "generator_adversarial_loss"]

AdversarialLoss = Literal["hinge", "lsgan"]


def _check_kind(kind: str) -> None:
    if kind not in ("hinge", "lsgan"):
        raise ValueError(f"kind: expected 'hinge' or 'lsgan', got {kind!r}")


def discriminator_loss(
    real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput], kind: AdversarialLoss
) -> Tensor:
    """Scalar discriminator loss (call with ``fake`` computed from detached reconstructions)."""
    _check_kind(kind)
    if len(real) != len(fake) or not real:
        raise ValueError(
            f"real/fake: expected equal non-zero counts of outputs, got {len(real)} and {len(fake)}"
        )
    terms = []
    for r, f in zip(real, fake):
        if kind == "hinge":
            terms.append(F.relu(1.0 - r.logits).mean() + F.relu(1.0 + f.logits).mean())
        else:
            terms.append((r.logits - 1.0).square().mean() + f.logits.square().mean())
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake: Sequence[DiscriminatorOutput], kind: AdversarialLoss) -> Tensor:
    """Scalar generator loss from the discriminator outputs on reconstructions."""
    _check_kind(kind)
    if not fake:
        raise ValueError("fake: expected at least one discriminator output")
    if kind == "hinge":
        terms = [F.relu(1.0 - f.logits).mean() for f in fake]
    else:
        terms = [(f.logits - 1.0).square().mean() for f in fake]
    return torch.stack(terms).mean()


def feature_matching_loss(real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput]) -> Tensor:
    """Mean L1 between feature maps of real (detached) and reconstructed audio."""
    if len(real) != len(fake) or not real:
        raise ValueError(
            f"real/fake: expected equal non-zero counts of outputs, got {len(real)} and {len(fake)}"
        )
    terms = []
    for r, f in zip(real, fake):
        layer_terms = [(fr.detach() - ff).abs().mean() for fr, ff in zip(r.features, f.features)]
        terms.append(torch.stack(layer_terms).mean())
    return torch.stack(terms).mean()

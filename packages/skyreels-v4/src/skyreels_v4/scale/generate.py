"""Distributed generation: the pipeline's sampling with the video tokens sharded over ranks (Ulysses,
paper 3.1), one output written by rank 0 (issue 15; docs/scale-out.md "Generation").

Every rank runs the same request (same seed, so the same noise, prompt embedding and conditioning),
the transformer's video self-attention and eq. 5 run across the group, and every rank ends with the
same latents; only rank 0 writes. Python::

    dist.init_process_group("nccl")  # or init_from_environment()
    output = sequence_parallel_generate(pipe, "A red circle ...", out="clip.mp4", seed=0)

Command line (the ``skyreels-v4 generate`` arguments, unchanged)::

    torchrun --nproc-per-node 4 -m skyreels_v4.scale.generate --model FOLDER --prompt "..." \\
        --out clip.mp4 --device cuda

``--device cuda`` becomes ``cuda:<LOCAL_RANK>`` on each rank; on CPU the group uses gloo.

Spare ranks split the guidance branches (:mod:`skyreels_v4.scale.guidance_parallel`): sequence
parallelism takes the largest size that divides both the world size and the video heads, and the
ranks left over (``world / sp``) each run a slice of the stacked conditional / unconditional batch.
``--guidance-parallel N`` (torchrun only, before the ``generate`` arguments) sets that number instead:
sp = world / N.

With the efficient path of paper 4.5 (``refine_to``), the pipeline's refiner (VSA in every block) is
sequence-parallel over the same group as the transformer: it runs on the largest token count of the
path, the high-resolution clip.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from skyreels_v4.scale.guidance_parallel import (
    GenerationGroups,
    apply_guidance_parallel,
    default_guidance_parallel,
    generation_groups,
)
from skyreels_v4.scale.sequence_parallel import apply_sequence_parallel, sequence_parallel_group

__all__ = ["apply_generation_parallel", "init_from_environment", "main", "sequence_parallel_generate"]


def init_from_environment(backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``...) unless it already is; nccl when CUDA is available, else gloo. Returns whether
    a process group is initialised (False outside torchrun)."""
    if dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def apply_generation_parallel(
    transformer: Any, guidance_parallel: int | None = None, *, refiner: Any = None
) -> GenerationGroups:
    """Split all ranks into the ``guidance x sp`` grid and apply both parallelisms to ``transformer``,
    in place. ``guidance_parallel`` None: the ranks that sequence parallelism cannot use
    (:func:`default_guidance_parallel`). ``refiner`` (a ``VideoRefiner``, or None): sharded over the
    same sequence group. Collective."""
    if not dist.is_initialized():
        raise RuntimeError("apply_generation_parallel needs torch.distributed initialised (torchrun)")
    if guidance_parallel is None:
        guidance_parallel = default_guidance_parallel(
            dist.get_world_size(), transformer.config.video.num_heads
        )
    groups = generation_groups(guidance_parallel)
    apply_sequence_parallel(transformer, groups.sequence)
    apply_guidance_parallel(transformer, groups.guidance)
    if refiner is not None:
        apply_sequence_parallel(refiner, groups.sequence)
    return groups


def _refiner_of(pipe: Any) -> Any:
    """The pipeline's ``VideoRefiner`` (the ``refiner/`` component), or None."""
    component = getattr(pipe, "refiner", None)
    return None if component is None else component.refiner


def sequence_parallel_generate(
    pipe: Any,
    request: Any = None,
    *,
    group: dist.ProcessGroup | None = None,
    guidance_parallel: int | None = None,
    out: str | os.PathLike[str] | None = None,
    wav: bool = False,
    **kwargs: Any,
) -> Any:
    """``pipe(request, **kwargs)`` over all ranks; writes ``out`` from rank 0 only. Collective: every rank
    calls it with the same request. Returns the ``GenerationOutput`` (identical on every rank).

    ``group`` given: the video tokens are sharded over it (Ulysses) and nothing else. Otherwise the
    ranks form the ``guidance x sp`` grid of :func:`apply_generation_parallel` (``guidance_parallel``
    None: as many guidance slices as sequence parallelism leaves spare ranks). The first call applies
    the parallelism to ``pipe.transformer``; later calls reuse it."""
    if not dist.is_initialized():
        raise RuntimeError(
            "sequence_parallel_generate needs torch.distributed initialised (torchrun; init_from_environment)"
        )
    if group is not None and guidance_parallel is not None:
        raise ValueError("group, guidance_parallel: give one (a group means sequence parallelism only)")
    applied = sequence_parallel_group(pipe.transformer)
    refiner = _refiner_of(pipe)
    if group is not None:
        if applied is None:
            apply_sequence_parallel(pipe.transformer, group)
        elif applied is not group:
            raise ValueError("pipe.transformer: sequence parallelism is already applied over another group")
        if refiner is not None and sequence_parallel_group(refiner) is None:
            apply_sequence_parallel(refiner, group)
    elif applied is None and getattr(pipe.transformer, "_guidance_parallel_group", None) is None:
        apply_generation_parallel(pipe.transformer, guidance_parallel, refiner=refiner)
    elif refiner is not None and sequence_parallel_group(refiner) is None:
        # The transformer was parallelised before this refiner was attached: shard it like the transformer.
        transformer_group = sequence_parallel_group(pipe.transformer)
        if transformer_group is not None:
            apply_sequence_parallel(refiner, transformer_group)
    if out is not None and not Path(out).parent.is_dir():
        raise ValueError(f"out: expected a file in an existing folder, got {str(out)!r}")
    output = pipe(request, **kwargs)
    if out is not None:
        if dist.get_rank() == 0:
            output.save(out, wav=wav)
        dist.barrier()
    return output


def _rank_device(argv: list[str]) -> list[str]:
    """``--device cuda`` -> ``--device cuda:<LOCAL_RANK>`` (one GPU per rank)."""
    local = os.environ.get("LOCAL_RANK", "0")
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv) and argv[i + 1] == "cuda":
            argv[i + 1] = f"cuda:{local}"
        elif arg == "--device=cuda":
            argv[i] = f"--device=cuda:{local}"
    return argv


def _guidance_parallel_flag(argv: list[str]) -> tuple[int | None, list[str]]:
    """``--guidance-parallel N`` taken out of ``argv`` (CommandLineError naming it when bad)."""
    from skyreels_v4.cli import _argparse_errors_raise, positive_int

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--guidance-parallel", type=positive_int, default=None)
    with _argparse_errors_raise():
        known, rest = parser.parse_known_args(argv)
    return known.guidance_parallel, rest


def main(argv: list[str] | None = None) -> int:
    """``skyreels-v4 generate`` under torchrun: SP over all ranks, rank 0 writes and prints."""
    from skyreels_v4.pipeline import cli

    argv = _rank_device(sys.argv[1:] if argv is None else argv)
    try:
        guidance_parallel, argv = _guidance_parallel_flag(argv)
    except ValueError as error:
        print(f"skyreels-v4 generate: error: {error}", file=sys.stderr)
        return 2
    if not init_from_environment():
        return cli.main(argv)  # one process: the plain command
    rank = dist.get_rank()
    quiet = contextlib.nullcontext() if rank == 0 else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            code = cli.main(
                argv,
                on_load=lambda pipe: apply_generation_parallel(
                    pipe.transformer, guidance_parallel, refiner=_refiner_of(pipe)
                ),
                writes=rank == 0,
            )
        dist.barrier()  # the file is complete before any rank returns
        return code
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

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
Not done: splitting guidance branches over spare ranks (every rank runs all branches).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from skyreels_v4.scale.sequence_parallel import apply_sequence_parallel, sequence_parallel_group

__all__ = ["init_from_environment", "main", "sequence_parallel_generate"]


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


def sequence_parallel_generate(
    pipe: Any,
    request: Any = None,
    *,
    group: dist.ProcessGroup | None = None,
    out: str | os.PathLike[str] | None = None,
    wav: bool = False,
    **kwargs: Any,
) -> Any:
    """``pipe(request, **kwargs)`` with the transformer's video tokens sharded over ``group`` (default:
    all ranks); writes ``out`` from rank 0 only. Collective: every rank calls it with the same request.
    Returns the ``GenerationOutput`` (identical on every rank)."""
    if not dist.is_initialized():
        raise RuntimeError(
            "sequence_parallel_generate needs torch.distributed initialised (torchrun; init_from_environment)"
        )
    group = dist.group.WORLD if group is None else group
    if sequence_parallel_group(pipe.transformer) is None:
        apply_sequence_parallel(pipe.transformer, group)
    elif sequence_parallel_group(pipe.transformer) is not group:
        raise ValueError("pipe.transformer: sequence parallelism is already applied over another group")
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


def main(argv: list[str] | None = None) -> int:
    """``skyreels-v4 generate`` under torchrun: SP over all ranks, rank 0 writes and prints."""
    from skyreels_v4.pipeline import cli

    argv = _rank_device(sys.argv[1:] if argv is None else argv)
    if not init_from_environment():
        return cli.main(argv)  # one process: the plain command
    rank = dist.get_rank()
    quiet = contextlib.nullcontext() if rank == 0 else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            code = cli.main(
                argv,
                on_load=lambda pipe: apply_sequence_parallel(pipe.transformer, dist.group.WORLD),
                writes=rank == 0,
            )
        dist.barrier()  # the file is complete before any rank returns
        return code
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

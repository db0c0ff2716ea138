"""Resumable data order and per-item randomness (issue 14, exact resume).

A run's data stream must be a pure function of (seed, epoch, position), never of how many times
the process started:

- :class:`ResumableSampler` shuffles pass ``e`` with a generator seeded from ``(seed, e)`` and
  yields :class:`SeededIndex` values: plain ints that also carry a seed derived from
  ``(seed, epoch, position)``. Its iterator is stateful (epoch, items yielded), so torchdata's
  ``StatefulDataLoader`` stores and restores the data position inside Lightning checkpoints.
- a dataset draws its per-item randomness (random crops, masks) from ``item_generator(index)``:
  the same item gets the same draws in the main process or in any worker, before or after a
  restart. Worker processes hold no random state that matters, so none needs saving.
- :func:`dataloader` builds the ``StatefulDataLoader`` with that sampler, a seeded loader
  generator (creating an iterator draws nothing from the global RNG) and seeded workers.
- data parallelism: with ``num_replicas`` R > 1 every replica computes the same pass order and takes
  positions ``rank, rank + R, ...`` of it (the seeds stay those of the global positions, so one step
  of R replicas reads exactly the items, with the same draws, of one step of a single process with an
  R times larger batch). :func:`data_parallel_of` reads ``(R, rank)`` from a Lightning trainer; ranks
  of one sequence-parallel group get the same rank and so the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from skyreels_v4.errors import ConfigMismatchError, PreflightError

__all__ = [
    "ResumableSampler",
    "SeededIndex",
    "check_same_replicas",
    "data_parallel_of",
    "dataloader",
    "item_generator",
    "mix_seed",
    "step_generator",
]

_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): distinct inputs give unrelated seeds."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value = (value ^ (value >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value & _MASK


class SeededIndex(int):
    """A dataset index that also carries the seed of this draw of the item (``.seed``)."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # survives the pickling to worker processes
        return (SeededIndex, (int(self), self.seed))

    def __repr__(self) -> str:
        return f"SeededIndex({int(self)}, seed={self.seed})"


def item_generator(index: int) -> torch.Generator | None:
    """A CPU generator seeded for this draw of the item, or None for a plain int index (then use the
    global RNG, as outside a resumable loader)."""
    if isinstance(index, SeededIndex):
        return torch.Generator().manual_seed(index.seed)
    return None


class _EpochIterator(Iterator[SeededIndex]):
    """One pass of a :class:`ResumableSampler`; stateful (epoch, items yielded)."""

    def __init__(self, sampler: ResumableSampler) -> None:
        self.sampler = sampler
        self.epoch = sampler.epoch
        self.yielded = 0
        self._order: list[int] | None = None

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> SeededIndex:
        sampler = self.sampler
        if self.yielded >= len(sampler):
            raise StopIteration
        if self._order is None:
            self._order = sampler.order(self.epoch)
        position = sampler.rank + self.yielded * sampler.num_replicas  # in the pass's global order
        self.yielded += 1
        if self.yielded == len(sampler):
            sampler.finished = True
        return SeededIndex(self._order[position], mix_seed(sampler.seed, self.epoch, position))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded, "num_replicas": self.sampler.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.check_replicas(state)
        self.epoch, self.yielded, self._order = int(state["epoch"]), int(state["yielded"]), None
        self.sampler.epoch = self.epoch
        self.sampler.finished = self.yielded >= len(self.sampler)


class ResumableSampler(Sampler[SeededIndex]):
    """Indices of a dataset of ``length`` items, shuffled per pass from ``(seed, pass)`` when ``shuffle``.

    ``per_epoch`` (default ``length``) items are drawn per pass: ``dataloader(drop_last=True)``
    passes a multiple of the batch size, so the pass ends exactly with its last full batch.
    The pass number counts the sampler's own completed passes: a new iterator starts the next
    pass only once the previous one yielded everything. It deliberately ignores Lightning's epoch
    counter (no ``set_epoch``): resuming from a checkpoint written at the last batch of an epoch
    makes that counter skip a value, which would change the data order.

    With ``num_replicas`` R > 1 (data parallelism) this replica draws positions ``rank, rank + R, ...``
    of the ``per_epoch`` positions of every pass (``per_epoch`` must be a multiple of R, so that every
    replica draws as many items as the others); ``len`` is ``per_epoch / R``.
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int,
        shuffle: bool = True,
        per_epoch: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected a positive int, got {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas: expected a positive int, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected an int in [0, {num_replicas}), got {rank!r}")
        per_epoch = length if per_epoch is None else per_epoch
        if isinstance(per_epoch, bool) or not isinstance(per_epoch, int) or not 1 <= per_epoch <= length:
            raise ValueError(f"per_epoch: expected an int in [1, {length}], got {per_epoch!r}")
        if per_epoch % num_replicas:
            raise ValueError(
                f"per_epoch: expected a multiple of num_replicas = {num_replicas} (every replica draws "
                f"as many items), got {per_epoch}"
            )
        self.length, self.seed, self.shuffle, self.per_epoch = length, seed, shuffle, per_epoch
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.finished = False

    def check_replicas(self, state: dict[str, int]) -> None:
        check_same_replicas(state, self.num_replicas)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5EED))
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> _EpochIterator:
        if self.finished:
            self.epoch, self.finished = self.epoch + 1, False
        return _EpochIterator(self)

    def __len__(self) -> int:
        return self.per_epoch // self.num_replicas

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "finished": int(self.finished), "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.check_replicas(state)
        self.epoch, self.finished = int(state["epoch"]), bool(state["finished"])


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's (seeded) generator; numpy and python follow it.
    seed = torch.initial_seed() & 0xFFFFFFFF
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is what user code draws from
    random.seed(seed)


def check_same_replicas(state: dict[str, Any], num_replicas: int) -> None:
    """A sampler state saved by a run with another data-parallel size cannot resume here (each replica's
    positions differ): ``ConfigMismatchError`` saying so. States without the key count as 1 replica."""
    saved = int(state.get("num_replicas", 1))
    if saved != num_replicas:
        raise ConfigMismatchError(
            f"sampler state: saved by a run with {saved} data-parallel replicas, this run has "
            f"{num_replicas}; resume with the same data-parallel size (or start a new run from the "
            "exported weights)"
        )


def data_parallel_of(trainer: Any, *, owner: str | None = None) -> tuple[int, int]:
    """``(num_replicas, rank)`` of this process among a Lightning trainer's data-parallel replicas:
    from the strategy's ``distributed_sampler_kwargs`` (``SkyReelsParallelStrategy`` counts one
    sequence-parallel group as one replica; DDP / FSDP count every process), ``(1, 0)`` without a
    trainer or with one process. ``owner``: a data module that shards its batches itself (named in
    errors); then Lightning must not inject its own ``DistributedSampler`` as well, so
    ``use_distributed_sampler`` has to be false on several processes (a typed error says so)."""
    if trainer is None or trainer.world_size <= 1:
        return 1, 0
    if owner is not None and trainer._accelerator_connector.use_distributed_sampler:
        raise PreflightError(
            f"trainer.use_distributed_sampler: must be false with {owner} on {trainer.world_size} "
            "processes (its sampler shards the batches over the data-parallel replicas itself and keeps "
            "its position for exact resume; Lightning cannot inject a DistributedSampler into it)"
        )
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("num_replicas", 1)), int(kwargs.get("rank", 0))


def step_generator(seed: int, salt: int, trainer: Any = None) -> torch.Generator:
    """A training step's generator (σ, ε, task draws), seeded by ``(seed, salt)`` (``salt``: the
    global step, or an offset for fixed validation draws) and this process's data-parallel replica
    (:func:`data_parallel_of`). Replica 0 and a single process keep the plain ``(seed, salt)`` draws;
    other replicas draw their own numbers, so a global batch of R replicas is not R copies of one
    draw. The ranks of one sequence-parallel group share a replica and so draw the same numbers, as
    they must. Depends on no process-wide random state, so a resumed run draws what the
    uninterrupted one drew."""
    base = int(seed) * 1_000_003 + int(salt)
    _, replica = data_parallel_of(trainer)
    return torch.Generator().manual_seed(mix_seed(base, replica) if replica else base)


def dataloader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    **kwargs: Any,
) -> StatefulDataLoader:
    """A resumable ``StatefulDataLoader`` over ``dataset`` (module docstring); with ``num_replicas`` > 1,
    this replica's share of every pass (each replica gets as many batches as the others: the pass is
    cut to a multiple of ``batch_size x num_replicas`` with ``drop_last``, else of ``num_replicas``)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"dataset: expected a map-style dataset with __len__, got {type(dataset).__name__}")
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
        ("num_replicas", num_replicas, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    length = len(dataset)
    unit = batch_size * num_replicas if drop_last else num_replicas
    if length < unit:
        raise ValueError(
            f"dataset: expected at least {unit} items ({batch_size if drop_last else 1} per batch x "
            f"{num_replicas} data-parallel replicas), got {length}"
        )
    sampler = ResumableSampler(
        length,
        seed=seed,
        shuffle=shuffle,
        per_epoch=length - length % unit,
        num_replicas=num_replicas,
        rank=rank,
    )
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(mix_seed(seed, 0x10AD)),
        worker_init_fn=_seed_worker if num_workers else None,
        **kwargs,
    )

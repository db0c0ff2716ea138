"""Event lists in seconds: nearest-event offsets (used by the metrics) and one-to-one matching.

The synchronisation metric asks, for every event of one list, whether the other list has an event
within the tolerance (:func:`nearest_offsets`). It is deliberately not one-to-one: a corner hit
is two reversals in the video but one blip, and two objects hitting 50 ms apart may be one onset
or two depending on the detector; the nearest-event rule scores all of these the same way on
both sides. :func:`match_events` (maximum one-to-one matching) validates the detectors against
the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def nearest_offsets(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Signed offset ``estimate - reference`` to the nearest estimate, per reference event.

    Args:
        reference: ``[R]`` event times (seconds, any order).
        estimate: ``[E]`` event times.

    Returns:
        ``[R]`` float64; ``inf`` everywhere when ``estimate`` is empty.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.sort(np.asarray(estimate, dtype=np.float64))
    if estimate.size == 0:
        return np.full(reference.shape, np.inf)
    right = np.clip(np.searchsorted(estimate, reference), 0, estimate.size - 1)
    left = np.clip(right - 1, 0, estimate.size - 1)
    to_left, to_right = estimate[left] - reference, estimate[right] - reference
    return np.where(np.abs(to_left) <= np.abs(to_right), to_left, to_right)


@dataclass(frozen=True, kw_only=True)
class EventMatch:
    """One-to-one matching of reference and estimated events within a tolerance.

    Attributes:
        reference_index, estimate_index: ``[M]`` int64, the matched pairs (both increasing).
        offsets: ``[M]`` float64 ``estimate - reference`` in seconds.
    """

    reference_index: np.ndarray
    estimate_index: np.ndarray
    offsets: np.ndarray


def match_events(reference: np.ndarray, estimate: np.ndarray, tolerance_s: float) -> EventMatch:
    """Maximum one-to-one matching of two sorted event lists with ``|estimate - reference| <= tolerance_s``.

    Scanning both lists in time order and pairing each reference with the earliest unmatched
    estimate inside its window is optimal for points on a line with a symmetric window, so no
    assignment solver is needed.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    ref_idx, est_idx = [], []
    i = j = 0
    while i < reference.size and j < estimate.size:
        if estimate[j] < reference[i] - tolerance_s:
            j += 1
        elif estimate[j] > reference[i] + tolerance_s:
            i += 1
        else:
            ref_idx.append(i)
            est_idx.append(j)
            i += 1
            j += 1
    ref_arr = np.asarray(ref_idx, dtype=np.int64)
    est_arr = np.asarray(est_idx, dtype=np.int64)
    return EventMatch(
        reference_index=ref_arr, estimate_index=est_arr, offsets=estimate[est_arr] - reference[ref_arr]
    )

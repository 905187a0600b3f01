"""Two spouts emitting the same ids in different orders, joined in order by one worker."""

from __future__ import annotations

import random
from collections.abc import Callable


def permutation(
    dispatch: Callable[[int, str], None], count: int = 100, seed: int = 0, tag: str = "value"
) -> None:
    """Dispatch ids 0..count-1 in a seeded random order, each with value ``tag-id``."""
    ids = list(range(count))
    random.Random(seed).shuffle(ids)
    for i in ids:
        dispatch(i, f"{tag}-{i}")


def show(left: str, right: str) -> tuple[str, str]:
    """Called once per id, in id order, with the part from each input."""
    print(f"{left} {right}", flush=True)
    return left, right

"""Word count: read lines, split them into words, count per word, report the top words."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def read_lines(dispatch: Callable[[int, str], None], path: str = "data/lines.txt") -> None:
    """Spout: every line of ``path``, with its line number (from 1) as sequence id."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            dispatch(number, line.rstrip("\n"))


def split(line: str) -> Iterator[str]:
    """Lowercase words without punctuation; each one goes downstream on its own."""
    yield from _WORD.findall(line.lower())


def word_of(word: str) -> str:
    """Grouping key: the same word always reaches the same Counter instance."""
    return word


class Counter:
    """Running count per word; emits (word, count so far) for every occurrence."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, word: str) -> tuple[str, int]:
        self.counts[word] = self.counts.get(word, 0) + 1
        return word, self.counts[word]


class Top:
    """Keeps the highest count seen per word and writes them all at end of stream."""

    def __init__(self, out: str = "results/counts.txt", show: int = 10) -> None:
        self.out = Path(out)
        self.show = show
        self.counts: dict[str, int] = {}

    def __call__(self, pair: tuple[str, int]) -> None:
        word, n = pair
        if n > self.counts.get(word, 0):
            self.counts[word] = n

    def close(self) -> None:
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("".join(f"{w}\t{n}\n" for w, n in ranked), encoding="utf-8")
        for word, n in ranked[: self.show]:
            print(f"{n:>7}  {word}")
        print(f"full counts: {self.out.resolve()}", flush=True)

from __future__ import annotations

import random

from dataspace.samples.generate import make_uscc


def usccs(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(make_uscc(rng, rng.choice(["110108", "310115", "440305", "330106"])))
    return sorted(out)

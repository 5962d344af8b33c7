"""Random and hostile override documents for the fuzz tests (tests/test_overrides.py and the
editor's API in tests/test_edit.py): structurally random JSON with the numbers that broke bgvid
(NaN, Infinity, 1e999, 5,000-digit integers), and valid documents with bytes flipped or hostile
tokens spliced in. Seeded: every run sends the same documents."""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

_BARE = ("NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-0", "1E-400")


def random_value(rng, depth=0):
    kind = rng.integers(0, 12 if depth < 4 else 8)
    if kind == 0:
        return int(rng.integers(-10**6, 10**6))
    if kind == 1:
        return float(rng.normal() * 10.0 ** rng.integers(-5, 300))
    if kind == 2:
        return rng.choice(["0", "1-3", " 2 - 9 ", "5-1", "-1", "1..3", "", "0" * 30 + "1", "١", "1\n", "restore",
                           "remove", "\u0000", "x" * 300])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return [float(rng.uniform(-50, 100)), float(rng.uniform(-50, 100))]
    if kind == 5:
        return rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-0", "1E-400", "0.0000000000001"])
    if kind == 6:
        return [[float(x), float(y)] for x, y in rng.uniform(-20, 80, (int(rng.integers(0, 5)), 2))]
    if kind == 7:
        return rng.choice([0, 0.5, 1, 1.0000001, -0.0, 2**62, 2**62 + 1, 2**63])
    if kind in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    keys = ["frames", "mode", "size", "softness", "points", "note", "keyframe"]
    return {str(rng.choice(keys)): random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 7)))}


def raw_json(value) -> str:
    """JSON text where strings named like a hostile number are written as that bare token."""
    if isinstance(value, str) and value in _BARE:
        return value
    if isinstance(value, list):
        return "[" + ",".join(raw_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + raw_json(v) for k, v in value.items()) + "}"
    return json.dumps(value)


def hostile_documents(seed: int, count: int, stroke: dict) -> Iterator[bytes]:
    """`count` documents (bytes): every third one structurally random (half of those built on the
    valid `stroke` with random values merged in), the others a valid two-stroke document damaged."""
    rng = np.random.default_rng(seed)
    valid = json.dumps([dict(stroke, frames="0-3", points=[[1, 2], [30.5, 40]]), dict(stroke, mode="restore")])
    tokens = ["NaN", "1e999", "9" * 5000, "-", "[", "]", "{", "}", ",", ":", '"', "\\ud800", "\\u0000", "\x00",
              "null", "true", "1" * 50, "0.5", "[[", "]]", "\ufeff", "\xff", "\ud800"]
    for i in range(count):
        if i % 3 == 0:
            doc = [random_value(rng) for _ in range(int(rng.integers(0, 4)))]
            if rng.random() < 0.5:
                doc = [dict(stroke, **(d if isinstance(d, dict) else {"points": d})) for d in doc]
            yield raw_json(doc if rng.random() < 0.9 else random_value(rng)).encode("utf-8", "surrogatepass")
        else:
            data = bytearray(valid.encode())
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, len(data)))
                if rng.random() < 0.5:
                    data[at] = int(rng.integers(0, 256))
                else:
                    data[at:at + int(rng.integers(0, 4))] = str(rng.choice(tokens)).encode("utf-8", "surrogatepass")
            yield bytes(data)

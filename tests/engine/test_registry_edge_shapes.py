"""Registry-wide: for every block and every example, also with 0-d and empty shapes wherever
``infer_shapes`` accepts them, ``forward`` returns exactly the inferred shapes and ``backward``
returns input-shaped gradients.

The variants of an example replace one float input by a 0-d scalar (and all of them at once), or
set one axis of one input to 0 (and the batch axis, and the last axis, of every input at once).
A variant that ``infer_shapes`` refuses (with a ShapeError naming the port) is one the block does
not allow and is left out; a variant it accepts must run and have exactly the shapes it promised.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks
from engine.blocks import Kind
from engine.errors import ShapeError

Shape = tuple[int, ...]


def _variants(block: blocks.Block, inputs: dict[str, Shape]) -> list[tuple[str, dict[str, Shape]]]:
    kinds = {p.name: p.kind for p in block.input_ports()}
    floats = [k for k in inputs if kinds.get(k) is not Kind.IDS]
    out: list[tuple[str, dict[str, Shape]]] = []
    for k in floats:
        out.append((f"{k}=()", {**inputs, k: ()}))
    if len(floats) > 1:
        out.append(("all floats ()", {**inputs, **{k: () for k in floats}}))
    for k, shape in inputs.items():
        for axis in range(len(shape)):
            out.append((f"{k}[{axis}]=0", {**inputs, k: tuple(0 if i == axis else s for i, s in enumerate(shape))}))
    for which, axis in (("batch", 0), ("last", -1)):
        if all(len(s) for s in inputs.values()):
            changed = {k: tuple(0 if i == axis % len(s) else d for i, d in enumerate(s)) for k, s in inputs.items()}
            out.append((f"every {which} axis = 0", changed))
    seen, unique = {tuple(sorted(inputs.items()))}, []
    for label, v in out:
        key = tuple(sorted(v.items()))
        if key not in seen:
            seen.add(key)
            unique.append((label, v))
    return unique


def _cases() -> tuple[list, int]:
    """The variants ``infer_shapes`` accepts, and how many it refused (with a ShapeError: any
    other exception fails the collection, so a block cannot refuse carelessly)."""
    cases, refused = [], 0
    for name in blocks.names():
        for i, example in enumerate(blocks.spec(name).examples):
            block = blocks.create(name, **example.params)
            for label, shapes in _variants(block, dict(example.inputs)):
                try:
                    block.infer_shapes(shapes)
                except ShapeError:
                    refused += 1
                    continue
                cases.append(pytest.param(name, i, shapes, id=f"{name}-{i}-{label}"))
    return cases, refused


CASES, REFUSED = _cases()


def _sample(block: blocks.Block, example: blocks.Example, shapes: dict[str, Shape], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return blocks.Example(example.params, shapes, example.ranges, example.choices, example.training).sample(block, rng)


@pytest.mark.parametrize("name,i,shapes", CASES)
def test_forward_shapes_equal_inferred_shapes_at_the_edges(name, i, shapes):
    example = blocks.spec(name).examples[i]
    block = blocks.create(name, **example.params)
    inferred = block.infer_shapes(shapes)
    rng = np.random.default_rng(0)
    inputs = _sample(block, example, shapes, rng)
    weights = {k: np.asarray(v, np.float64) for k, v in block.init_weights(shapes, rng).items()}
    outs, saved = block.forward(inputs, weights, example.context())
    assert {k: tuple(v) for k, v in inferred.items()} == {k: np.shape(v) for k, v in outs.items()}
    gout = {k: rng.standard_normal(np.shape(v)) for k, v in outs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
    gin, gw = block.backward(gout, saved, weights)
    for k, g in gin.items():
        assert np.shape(g) == np.shape(inputs[k]), f"gradient of input {k}"
    for k, g in gw.items():
        assert np.shape(g) == np.shape(weights[k]), f"gradient of weight {k}"


def test_the_edges_are_exercised():
    """The variants reach the cases that motivated them: scalar activations, empty softmax."""
    assert len(CASES) > 350 and REFUSED > 0
    ids = {c.id for c in CASES}
    for case in ("ReLU-0-a=()", "Sigmoid-0-a=()", "Tanh-0-a=()", "GELU-0-a=()", "Softmax-0-a[1]=0", "Attention-0-x[1]=0",
                 "Attention-5-every batch axis = 0", "Conv2d-0-x[0]=0", "CrossEntropy-0-every batch axis = 0"):
        assert case in ids, case

"""Tests generated from the block registry: every block, every example in its declaration.

- inferred shapes equal the real output shapes (float32 and float64), also with 0-d and empty
  shapes wherever ``infer_shapes`` accepts them;
- float64 central differences agree with ``backward`` on every float input and weight;
- the Numba kernels agree with their numpy twins, in float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks, kernels
from engine.gradcheck import check_block

CASES = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name in blocks.names()
    for i in range(len(blocks.spec(name).examples))
]


def _make(name: str, i: int, dtype=np.float64, seed: int = 0):
    example = blocks.spec(name).examples[i]
    block = blocks.create(name, **example.params)
    rng = np.random.default_rng(seed)
    inputs = example.sample(block, rng, dtype)
    weights = {k: np.asarray(v, dtype) for k, v in block.init_weights(example.inputs, rng).items()}
    # Random (not initial) weights, so zero-initialised biases and ones-initialised gains are tested too.
    weights = {k: (v + rng.uniform(-0.5, 0.5, v.shape)).astype(dtype) if k not in block.shared_weights() else v for k, v in weights.items()}
    return block, example, inputs, weights


@pytest.mark.parametrize("name", blocks.names())
def test_every_block_declares_itself(name):
    s = blocks.spec(name)
    assert s.formula and s.doc, f"{name} needs a formula and a docstring"
    assert s.examples, f"{name} needs at least one Example"
    assert s.outputs, f"{name} has no outputs"
    assert len({p.name for p in s.params}) == len(s.params)


@pytest.mark.parametrize("name,i", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inferred_shapes_equal_real_shapes(name, i, dtype):
    block, example, inputs, weights = _make(name, i, dtype)
    inferred = block.infer_shapes(example.inputs)
    outs, _ = block.forward(inputs, weights, example.context())
    assert {k: tuple(v) for k, v in inferred.items()} == {k: np.shape(v) for k, v in outs.items()}
    wshapes = block.weight_shapes(example.inputs)
    assert {k: v.shape for k, v in weights.items() if k not in block.shared_weights()} == {k: tuple(v) for k, v in wshapes.items()}
    has_float_source = any(np.issubdtype(v.dtype, np.floating) for v in [*inputs.values(), *weights.values()])
    for k, v in outs.items():
        # Sources without float inputs or weights (Constant) are cast by the runtime.
        if has_float_source and np.issubdtype(np.asarray(v).dtype, np.floating):
            assert np.asarray(v).dtype == dtype, f"output {k} is {np.asarray(v).dtype}, inputs were {np.dtype(dtype)}"


@pytest.mark.parametrize("name,i", CASES)
def test_gradients_match_central_differences(name, i):
    block, example, inputs, weights = _make(name, i)
    checks = check_block(block, inputs, weights, context=example.context())
    bad = [f"{c.what}: relative error {c.error:.2e}" for c in checks if not c.error < 1e-5]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("name,i", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_numpy_twins(name, i, dtype):
    block, example, inputs, weights = _make(name, i, dtype)
    results = {}
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            outs, saved = block.forward(inputs, weights, example.context())
            rng = np.random.default_rng(1)
            gout = {k: rng.standard_normal(np.shape(v)).astype(dtype) for k, v in outs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
            gin, gw = block.backward(gout, saved, weights)
        results[backend] = (outs, gin, gw)
    rtol, atol = (2e-4, 2e-5) if dtype == np.float32 else (1e-9, 1e-11)
    for part in range(3):
        fast, twin = results["numba"][part], results["numpy"][part]
        assert fast.keys() == twin.keys()
        for k in fast:
            np.testing.assert_allclose(fast[k], twin[k], rtol=rtol, atol=atol, err_msg=f"{name} {k}")

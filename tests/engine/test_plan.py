"""The execution plan (engine.plan) computes exactly what the plain pass computes: the same
values, gradients and weight gradients, bit for bit, for every lesson and every composite block
(inlined), in evaluation and in training mode; failures surface as the plain pass reports them;
a pass run by the plan can still be stepped backwards."""

from __future__ import annotations

import numpy as np
import pytest

import presets
from engine import blocks, serialize
from engine.blocks import Context
from engine.data import bind
from engine.errors import RuntimeFailure
from engine.graph import Graph
from engine.plan import GENERATE_AFTER, plan_for
from engine.runtime import Pass, Runtime


def _stepped(runtime: Runtime, feeds, loss=None, grads=None, context=None) -> Pass:
    """The plain pass, node by node (what the editor runs)."""
    p = runtime.start(feeds, context=context)
    for _ in p.forward_steps():
        pass
    if loss is not None or grads is not None:
        p.seed(loss, grads)
        for _ in p.backward_steps():
            pass
    return p


def _same(a: Pass, b: Pass) -> None:
    assert a.values.keys() == b.values.keys()
    for k in a.values:
        np.testing.assert_array_equal(a.values[k], b.values[k], err_msg=str(k))
        assert a.values[k].dtype == b.values[k].dtype
    assert a.grads.keys() == b.grads.keys()
    for k in a.grads:
        np.testing.assert_array_equal(a.grads[k], b.grads[k], err_msg=str(k))
    wa, wb = a.weight_gradients(), b.weight_gradients()
    assert wa.keys() == wb.keys()
    for node in wa:
        assert wa[node].keys() == wb[node].keys()
        for name in wa[node]:
            np.testing.assert_array_equal(wa[node][name], wb[node][name], err_msg=f"{node}/{name}")
    ua, ub = a.buffer_updates(), b.buffer_updates()
    assert ua.keys() == ub.keys()
    for node in ua:
        assert ua[node].keys() == ub[node].keys()
        for name in ua[node]:
            np.testing.assert_array_equal(ua[node][name], ub[node][name])


@pytest.mark.parametrize("name", presets.names())
@pytest.mark.parametrize("training", [False, True])
def test_plan_equals_the_plain_pass_on_every_lesson(name: str, training: bool) -> None:
    project = serialize.load(presets.path(name))
    graph = project.graph
    loss = project.training["loss"]
    runtime = Runtime(graph, seed=3, dtype=np.float32)
    feeds = bind(project.data, graph).first_feeds()
    context = Context(training=True, seed=5, step=2) if training else None
    key = runtime.loss_port(loss)
    for _ in range(GENERATE_AFTER + 1):  # the loops, then the code the plan writes (engine.plan._generate)
        fast = runtime.forward_backward(feeds, loss, context=context)
        assert fast._plan_state is not None  # the plan ran it
        _same(fast, _stepped(runtime, feeds, key, context=context))


def _composite_cases():
    for name in blocks.names():
        spec = blocks.spec(name)
        if spec.composite:
            for i in range(len(spec.examples)):
                yield pytest.param(name, i, id=f"{name}-{i}")


@pytest.mark.parametrize("name,i", list(_composite_cases()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_inlines_composites_exactly(name: str, i: int, dtype) -> None:
    example = blocks.spec(name).examples[i]
    block = blocks.create(name, **example.params)
    kinds = {p.name: p.kind for p in block.input_ports()}
    graph = Graph()
    node = graph.add_node(name, dict(example.params), name="model")
    feeds = {}
    rng = np.random.default_rng(i)
    sample = example.sample(block, rng, dtype)
    for port, shape in example.inputs.items():
        ids = kinds[port].value == "ids"
        src = graph.add_node("Input", {"shape": shape, "dtype": "ids" if ids else "float"}, name=f"in_{port}")
        graph.connect(src.id, "out", node.id, port)
        feeds[src.id] = sample[port]
    runtime = Runtime(graph, seed=i, dtype=dtype)
    seeds = {}
    probe = runtime.forward(feeds)
    for port in runtime.program.step(node.id).out_shapes:
        value = probe.values[(node.id, port)]
        if value.dtype.kind == "f" and port != "attn":
            seeds[(node.id, port)] = rng.standard_normal(value.shape).astype(dtype)
    context = example.context(seed=7)
    for _ in range(GENERATE_AFTER + 1):  # the loops, then the code the plan writes (engine.plan._generate)
        fast = runtime.start(feeds, context=context).run_forward()
        fast.run_backward(grads=seeds)
        assert fast._plan_state is not None
        _same(fast, _stepped(runtime, feeds, grads=seeds, context=context))
    assert plan_for(runtime)._fwd_code is not None


def test_a_composite_input_used_twice_sums_in_the_plain_pass_order() -> None:
    # x feeds a TransformerBlock (whose inner graph uses x twice) and, outside, an Add with its
    # output: the gradient at x is summed across the composite's edge as the plain pass sums it.
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 3, 4)}, name="x")
    tb = g.add_node("TransformerBlock", {"dim": 4, "heads": 2, "hidden": 5}, name="tb")
    add = g.add_node("Add", {}, name="add")
    loss = g.add_node("Mean", {}, name="loss")
    g.connect(x.id, "out", tb.id, "x")
    g.connect(tb.id, "out", add.id, "a")
    g.connect(x.id, "out", add.id, "b")
    g.connect(add.id, "out", loss.id, "a")
    runtime = Runtime(g, seed=0, dtype=np.float32)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    for _ in range(GENERATE_AFTER + 1):
        fast = runtime.forward_backward(feeds, "loss")
        _same(fast, _stepped(runtime, feeds, runtime.loss_port("loss")))


def test_a_failing_pass_reports_what_the_plain_pass_reports() -> None:
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 3)}, name="x")
    mean = g.add_node("Sum", {"axes": (1,)}, name="not a scalar")
    g.connect(x.id, "out", mean.id, "a")
    runtime = Runtime(g)
    with pytest.raises(RuntimeFailure, match="the loss must be a scalar"):
        runtime.forward_backward({"x": np.ones((2, 3))}, "not a scalar")


def test_a_planned_pass_can_still_be_stepped_backwards() -> None:
    project = serialize.load(presets.path("two_layer_net"))
    runtime = Runtime(project.graph, seed=0)
    feeds = bind(project.data, project.graph).first_feeds()
    key = runtime.loss_port(project.training["loss"])
    p = runtime.start(feeds, trace=False).run_forward()
    assert p._plan_state is not None
    p.seed(key)
    events = list(p.backward_steps())
    assert events == [] or all(e.phase == "backward" for e in events)
    _same(p, _stepped(runtime, feeds, key))


def test_the_plan_is_built_once_per_program_and_dtype() -> None:
    project = serialize.load(presets.path("bert"))
    r32 = Runtime(project.graph, dtype=np.float32)
    r64 = Runtime(project.graph, dtype=np.float64)
    assert plan_for(r32) is plan_for(r32)
    assert plan_for(r32) is not plan_for(r64)
    # the 24-layer BERT lesson flattens into its primitive blocks: no composite left
    assert all(type(s.block).__name__ not in ("BERT", "TransformerBlock") for s in plan_for(r32).steps if s.kind == 0)

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


# --- the code the plan writes (engine.plan._generate) holds nothing from the file -------------

#: Python that, run anywhere, would leave a trace (a module named "pwned"); no '/' (not allowed
#: in node ids) and no space (vocabulary words are split on spaces)
_PAYLOAD = "__import__('sys').modules.__setitem__('pwned',1)"
_HOSTILE = [
    "'" + ");" + _PAYLOAD + "#",
    '"' + "]);" + _PAYLOAD + "#",
    "\\'+" + _PAYLOAD + "+'",
    "}};{" + _PAYLOAD + "}#",
    "{" + _PAYLOAD + "!r}",
]


def _tie(doc: dict) -> None:
    """Tie a GenerateToken to the EmbedToken (a NODE param: a node id in the file)."""
    for n in doc["nodes"]:
        if n["type"] == "GenerateToken":
            n["params"]["tie_to"] = next(m["id"] for m in doc["nodes"] if m["type"] == "EmbedToken")


def _hostile(doc: dict, i: int) -> dict:
    """``doc`` (a lesson's JSON) with every node id and name replaced by Python code (names also
    with newlines), shared weights tied by those ids, one vocabulary word replaced by code."""
    _tie(doc)
    ids = {n["id"]: f"{_HOSTILE[k % len(_HOSTILE)]}{k}" for k, n in enumerate(doc["nodes"])}
    names = {n.get("name"): f"\n{_HOSTILE[(k + i) % len(_HOSTILE)]}\n# {k}\n" for k, n in enumerate(doc["nodes"])}
    for n in doc["nodes"]:
        n["id"], n["name"] = ids[n["id"]], names[n.get("name")]
        if n["params"].get("tie_to"):
            n["params"]["tie_to"] = ids[n["params"]["tie_to"]]
    for link in doc["links"]:
        link["from"][0], link["to"][0] = ids[link["from"][0]], ids[link["to"][0]]
    data = {}
    for key, spec in doc.get("data", {}).items():
        spec = dict(spec)
        if "same_as" in spec:
            spec["same_as"] = names[spec["same_as"]]
        if "vocab" in spec:
            word = _PAYLOAD.replace("pwned", "pwned2")
            spec["vocab"] = [word if w == "mat" else w for w in spec["vocab"]]
            spec["sentences"] = [s.replace("mat", word) for s in spec["sentences"]]
        data[names[key]] = spec
    doc["data"] = data
    doc["training"] = {**doc["training"], "loss": names[doc["training"]["loss"]]}
    return doc


@pytest.mark.parametrize("name", ["two_layer_net", "language_model", "bert"])
def test_the_written_code_holds_no_name_or_param_from_the_file(name: str) -> None:
    import io
    import json
    import sys
    import tokenize

    text = presets.path(name).read_text(encoding="utf-8")
    sources = []
    for hostile in (False, True):
        doc = json.loads(text)
        doc = _hostile(doc, 1) if hostile else doc
        _tie(doc)
        project = serialize.loads(json.dumps(doc))
        graph = project.graph
        runtime = Runtime(graph, seed=3, dtype=np.float32)
        feeds = bind(project.data, graph).first_feeds()
        key = runtime.loss_port(project.training["loss"])
        for _ in range(GENERATE_AFTER + 1):
            fast = runtime.forward_backward(feeds, project.training["loss"])
        plan = plan_for(runtime)
        assert plan._fwd_code is not None and fast._plan_state is not None  # the written code ran this pass
        _same(fast, _stepped(runtime, feeds, key))
        sources.append(plan.source)
    assert "pwned" not in sys.modules and "pwned2" not in sys.modules
    # The text is the same whatever the nodes are called: nothing of the file is in it ...
    assert sources[0] == sources[1]
    assert "import" not in sources[1] and "pwned" not in sources[1]
    # ... and its only string literal is the module's own dtype kind 'f'.
    strings = {t.string for t in tokenize.generate_tokens(io.StringIO(sources[1]).readline) if t.type == tokenize.STRING}
    assert strings == {"'f'"}


def test_the_written_code_refuses_anything_but_an_index() -> None:
    from engine.plan import _Source

    assert _Source.n(12) == "12"
    for value in ("1]; import os #", np.int64(3), True, 1.5):
        with pytest.raises(TypeError):
            _Source.n(value)  # type: ignore[arg-type]


def test_an_edited_graph_gets_a_new_plan_and_new_code() -> None:
    project = serialize.load(presets.path("two_layer_net"))
    graph = project.graph
    loss = project.training["loss"]
    feeds = bind(project.data, graph).first_feeds()
    runtime = Runtime(graph, seed=0)
    for _ in range(GENERATE_AFTER + 1):
        runtime.forward_backward(feeds, loss)
    old = plan_for(runtime)
    assert old._fwd_code is not None
    # Insert a ReLU after the sigmoid: the program, its plan and its code change with the revision.
    sigmoid = next(n for n in graph.nodes.values() if n.type == "Sigmoid")
    out = next(link for link in graph.links if link.src == sigmoid.id)
    relu = graph.add_node("ReLU", {}, name="relu")
    graph.disconnect(out)
    graph.connect(sigmoid.id, "out", relu.id, "a")
    graph.connect(relu.id, "out", out.dst, out.dst_port)
    runtime = Runtime(graph, seed=0)
    for _ in range(GENERATE_AFTER + 1):
        fast = runtime.forward_backward(feeds, loss)
        _same(fast, _stepped(runtime, feeds, runtime.loss_port(loss)))
    new = plan_for(runtime)
    assert new is not old and new._fwd_code is not None and new.source != old.source
    # One program per graph (the newest revision), one plan per dtype: nothing piles up.
    assert graph._cache["program"][1] is runtime.program
    assert list(runtime.program.plans) == [runtime.dtype.str]


# --- elementwise blocks and Parameters written as direct calls (Block.array_form) -------------


def _elementwise_graph(shape=(4, 8)) -> tuple[Graph, str]:
    """Every block with an array form, fed broadcast Parameters of shapes (), (8,), (4, 1) and
    a fan-out (x ⊙ x, and the Tanh's output read by three blocks)."""
    g = Graph()
    x = g.add_node("Input", {"shape": shape}, name="x").id
    params = {s: g.add_node("Parameter", {"shape": s, "init": "uniform", "scale": 0.9}, name=f"p{len(s)}{s}").id
              for s in ((), shape[1:], (shape[0], 1))}

    def op(kind, a, b=None, **p):
        node = g.add_node(kind, p, name=f"{kind}{len(g.nodes)}").id
        g.connect(a, "out", node, "a")
        if b is not None:
            g.connect(b, "out", node, "b")
        return node

    h = op("Multiply", x, x)
    h = op("Add", h, params[()])
    t = op("Tanh", h)
    h = op("Subtract", t, params[shape[1:]])
    h = op("Multiply", h, params[(shape[0], 1)])
    h = op("Divide", h, op("Add", op("Square", t), params[()]))
    h = op("Sigmoid", op("Add", h, t))
    h = op("ReLU", op("Negate", h))
    h = op("GELU", op("Scale", h, factor=-1.5))
    h = op("Pow", op("Add", op("Square", h), params[shape[1:]]), exponent=1.5)
    loss = op("Mean", h)
    return g, loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_elementwise_blocks_written_as_direct_calls_equal_the_plain_pass(dtype, backend) -> None:
    from engine import kernels

    graph, loss = _elementwise_graph()
    runtime = Runtime(graph, seed=1, dtype=dtype)
    feeds = {"x": np.random.default_rng(2).standard_normal((4, 8)).astype(dtype)}
    key = runtime.loss_port(loss)
    with kernels.using(backend):
        for _ in range(GENERATE_AFTER + 2):
            fast = runtime.forward_backward(feeds, loss)
            _same(fast, _stepped(runtime, feeds, key))
    plan = plan_for(runtime)
    direct = {s.top for s in plan.steps if s.kind == 0} - {node for _, node in plan._top_steps}
    # every step but the Mean was written as a direct call of the block's array form
    assert {graph.nodes[n].type for n in direct} == {"Parameter", "Multiply", "Add", "Tanh", "Subtract", "Divide",
                                                     "Square", "Sigmoid", "Negate", "ReLU", "Scale", "GELU", "Pow"}
    assert [graph.nodes[s.top].type for s in plan.steps if s.kind == 0 and s.top not in direct] == ["Mean"]
    assert plan.source.count("forward_arrays") == 0  # methods are constants, never names in the text
    # the gradients of the broadcast Parameters are summed back to their shapes
    grads = fast.weight_gradients()
    for node in graph.nodes.values():
        if node.type == "Parameter":
            assert grads[node.id]["value"].shape == runtime.weights[node.id]["value"].shape


def test_array_forms_are_what_compute_and_vjp_compute() -> None:
    # The plan calls forward_arrays/backward_arrays; the stepped pass calls compute/vjp: for
    # every block declaring an array form, on its examples, the two give the same arrays.
    rng = np.random.default_rng(0)
    checked = 0
    for name in blocks.names():
        block0 = blocks.create(name)
        if not block0.array_form:
            continue
        for example in blocks.spec(name).examples:
            block = blocks.create(name, **example.params)
            sample = example.sample(block, rng, np.float64)
            ports = [p.name for p in block.input_ports()]
            args = [sample[p] for p in ports]
            outs, saved = block.forward(sample, {})
            out = block.forward_arrays(*args)
            np.testing.assert_array_equal(out, outs["out"])
            g = rng.standard_normal(np.shape(out))
            gin, _ = block.backward({"out": g}, saved, {})
            from engine.blocks._base import unbroadcast

            for port, ga in zip(ports, block.backward_arrays(g, *args, out)):
                np.testing.assert_array_equal(unbroadcast(np.asarray(ga), np.shape(sample[port])), gin[port],
                                              err_msg=f"{name} {port}")
            checked += 1
    assert checked >= 12


def test_a_planned_pass_retains_nothing_and_faults_no_new_page_in_steady_state() -> None:
    # Each pass allocates its arrays afresh (its results stay the caller's), and frees them with
    # the pass: once the heap has settled, a pass touches no new page and keeps no memory.
    import resource
    import tracemalloc

    g = Graph()
    # arrays of 128 KiB and more: what glibc's untuned malloc would map and unmap at every pass
    ids = g.add_node("Input", {"shape": (8, 32), "dtype": "ids"}, name="x")
    bert = g.add_node("BERT", {"vocab": 50, "dim": 128, "heads": 4, "layers": 2, "max_len": 32}, name="bert")
    g.connect(ids.id, "out", bert.id, "ids")
    runtime = Runtime(g, seed=0, dtype=np.float32)
    feeds = {"x": np.random.default_rng(0).integers(0, 50, size=(8, 32))}
    seed = {(bert.id, "out"): np.ones((8, 32, 128), np.float32)}

    def one() -> None:
        p = runtime.start(feeds).run_forward()
        p.run_backward(grads=seed)

    for _ in range(10):
        one()
    # NOTE: this thread's faults, where the pass runs: the process's also count whatever other
    # threads do meanwhile (a suite's earlier tests leave some finishing), which failed this once
    # in a full run (2 faults in 20 passes) and passed alone
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # (Linux only)
    before = resource.getrusage(who).ru_minflt
    for _ in range(20):
        one()
    assert resource.getrusage(who).ru_minflt - before == 0
    tracemalloc.start()
    try:
        for _ in range(3):
            one()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        one()
        per_pass = tracemalloc.get_traced_memory()[1] - held  # what one pass allocates at its peak
        for _ in range(20):
            one()
        grown = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert per_pass > 100_000
    assert grown < 2_000  # 20 passes kept nothing (a kept array would be ≥ 2 KB a pass)

"""The lessons use padding masks where their batches are padded, and the ConvNet lesson trains
with BatchNorm and Dropout; all of it stays finite through a training-mode step."""

from __future__ import annotations

import numpy as np

import presets
from engine import serialize
from engine.blocks import Context
from engine.data import bind, text_for
from engine.generate import generate
from engine.runtime import Runtime


def _into(graph, node_name: str, port: str) -> str:
    node = graph.find(node_name)
    link = graph.link_into(node.id, port)
    assert link is not None, f"{node_name}.{port} is not connected"
    return graph.nodes[link.src].name


def test_the_language_model_masks_the_left_padding_of_its_windows():
    project = serialize.load(presets.path("language_model"))
    g = project.graph
    text = text_for(project.data)
    assert _into(g, "SequenceModel", "mask") == "padding mask"
    assert _into(g, "padding mask", "ids") == "context"
    assert g.find("padding mask").params["pad_id"] == text.pad_id == g.find("loss").params["ignore_index"]
    feeds = bind(project.data, g).first_feeds()
    ids = feeds[g.find("context").id]
    assert (ids[:, 0] == text.pad_id).any()  # windows at a sentence's start are padded: the mask matters
    runtime = Runtime(g, seed=0)
    p = runtime.forward_backward(feeds, "loss", context=Context(training=True))
    assert np.isfinite(float(p.values[runtime.loss_port("loss")]))
    assert all(np.isfinite(w).all() for ws in p.weight_gradients().values() for w in ws.values())
    # generation still finds the model (one token-id Input) and feeds the mask from the prompt
    assert len(generate(runtime, text.encode_prompt("the"), max_new_tokens=3)) == 3


def test_the_translator_ignores_the_padding_of_short_sentences():
    project = serialize.load(presets.path("seq2seq"))
    text = text_for(project.data)
    node = project.graph.find("translator")
    assert node.params["pad_id"] == text.pad_id == project.graph.find("loss").params["ignore_index"]
    arrays = text.arrays()
    assert (arrays["src"] == text.pad_id).any() and (arrays["target"] == text.pad_id).any()  # padded batches


def test_the_convnet_lesson_trains_with_batchnorm_and_dropout():
    project = serialize.load(presets.path("convnet"))
    node = project.graph.find("ConvNet")
    assert node.params["batchnorm"] is True and 0 < node.params["dropout"] < 1
    inner = {n.type for n in node.block.expand().nodes.values()}
    assert {"BatchNorm", "Dropout", "Conv2d", "MaxPool2d"} <= inner
    assert "BatchNorm" in project.description and "dropout" in project.description
    runtime = Runtime(project.graph, seed=0)
    feeds = bind(project.data, project.graph).first_feeds()
    train = runtime.forward_backward(feeds, "loss", context=Context(training=True, seed=0, step=0))
    updates = train.buffer_updates()[node.id]
    assert set(updates) == {"bn1/running_mean", "bn1/running_var", "bn2/running_mean", "bn2/running_var"}
    evaluated = runtime.forward(feeds)
    assert float(train.values[runtime.loss_port("loss")]) != float(evaluated.values[runtime.loss_port("loss")])

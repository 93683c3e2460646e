"""Graphs for the export tests: one block between Inputs and Outputs, and all of them at once."""

from __future__ import annotations

import zlib

import numpy as np

from engine import blocks
from engine.blocks import Kind
from engine.graph import Graph


def block_graph(type_id: str, example: blocks.Example, dtype, seed: int) -> tuple[Graph, dict[str, np.ndarray]]:
    """Inputs → the block → one Output per output port; the example's inputs as feeds."""
    g = Graph()
    block = blocks.create(type_id, **example.params)
    feeds = example.sample(block, np.random.default_rng(seed), dtype)
    kinds = {p.name: p.kind for p in block.input_ports()}
    for port, value in feeds.items():
        ids = kinds[port] is Kind.IDS
        g.add_node("Input", {"shape": value.shape, "dtype": "ids" if ids else "float"}, node_id=f"in_{port}", name=port)
    g.add_node(type_id, example.params, node_id="block", name="block")
    if type_id == "Input":
        feeds = {"block": np.random.default_rng(seed).uniform(-1, 1, size=example.params["shape"]).astype(dtype)}
    else:
        for port in list(feeds):
            g.connect(f"in_{port}", "out", "block", port)
            feeds[f"in_{port}"] = feeds.pop(port)
    for port in g.node("block").output_ports():
        g.add_node("Output", node_id=f"out_{port.name}", name=f"{port.name} out")
        g.connect("block", port.name, f"out_{port.name}", "x")
    return g, feeds


def zoo(dtype) -> tuple[Graph, dict[str, np.ndarray]]:
    """One graph holding the first example of every block type side by side (node ids and names
    prefixed with ``Type-0``), and its feeds. Examples whose inputs are drawn alike (shape, kind
    and range) share one Input."""
    g = Graph()
    feeds: dict[str, np.ndarray] = {}
    shared: dict[tuple, str] = {}
    for type_id in blocks.names():
        for i, example in enumerate(blocks.spec(type_id).examples[:1]):
            tag = f"{type_id}-{i}"
            part, part_feeds = block_graph(type_id, example, dtype, zlib.crc32(tag.encode()))
            rename = {}
            for node in part.nodes.values():
                if node.type == "Input" and node.id != "block":
                    port = node.id[len("in_"):]
                    key = (tuple(node.params["shape"]), node.params["dtype"], example.ranges.get(port), example.choices.get(port))
                    if key in shared:
                        rename[node.id] = shared[key]
                        continue
                    shared[key] = rename[node.id] = f"{tag}:{node.id}"
                    feeds[rename[node.id]] = part_feeds[node.id]
                else:
                    rename[node.id] = f"{tag}:{node.id}"
                    if node.id in part_feeds:
                        feeds[rename[node.id]] = part_feeds[node.id]
                g.add_node(node.type, node.params, node_id=rename[node.id], name=f"{tag} {node.name}")
            for link in part.links:
                g.connect(rename[link.src], link.src_port, rename[link.dst], link.dst_port)
    return g, feeds

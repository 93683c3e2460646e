"""Text about a block, generated from its spec (never restated by hand)."""

from __future__ import annotations

import html
from typing import Any

from engine.blocks import BlockSpec, Param, ParamType


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph as plain text (reST ``literals`` lose their backticks)."""
    return doc.strip().split("\n\n")[0].replace("\n", " ").replace("``", "") if doc else ""


def param_range(p: Param) -> str:
    if p.type is ParamType.CHOICE:
        return " | ".join(p.choices)
    lo = "" if p.minimum is None else f"{p.minimum:g}"
    hi = "" if p.maximum is None else f"{p.maximum:g}"
    if lo and hi:
        return f"{lo} … {hi}"
    if lo:
        return f"≥ {lo}"
    if hi:
        return f"≤ {hi}"
    return ""


def format_value(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def spec_tooltip(spec: BlockSpec, label: str | None = None) -> str:
    """Rich-text tooltip: formula, ports (with kinds), params (defaults, ranges), weights."""
    e = html.escape
    parts = [f"<b>{e(label or spec.type_id)}</b> <span style='color:gray'>· {e(spec.category.value)}</span>"]
    if spec.formula:
        parts.append(f"<pre style='margin:4px 0'>{e(spec.formula)}</pre>")
    doc = first_paragraph(spec.doc)
    if doc:
        parts.append(f"<p style='margin:2px 0'>{e(doc)}</p>")
    if spec.inputs:
        ins = ", ".join(f"<b>{e(p.name)}</b> ({p.kind.value}{', optional' if p.optional else ''})" for p in spec.inputs)
        parts.append(f"<div>inputs: {ins}</div>")
    if spec.outputs:
        outs = ", ".join(f"<b>{e(p.name)}</b> ({p.kind.value})" for p in spec.outputs)
        parts.append(f"<div>outputs: {outs}</div>")
    if spec.params:
        rows = []
        for p in spec.params:
            rng = param_range(p)
            rows.append(f"{e(p.name)} = {e(format_value(p.default))}" + (f" [{e(rng)}]" if rng else ""))
        parts.append("<div>params: " + "; ".join(rows) + "</div>")
    if spec.weights:
        parts.append("<div>weights: " + ", ".join(f"{e(w.name)} {e(w.shape)}" for w in spec.weights) + "</div>")
    return "".join(parts)

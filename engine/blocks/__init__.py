"""The block registry: ``create``, ``names``, ``spec``, ``expand``, ``palette``.

Every module in this package whose name does not start with an underscore is a block family;
it is imported here and its ``@register``-ed classes become available. Adding a block is one file
(or one class in a family file) and no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from engine.blocks._base import (
    BUFFER_UPDATES,
    EVAL,
    Block,
    BlockSpec,
    Category,
    Context,
    Example,
    Kind,
    Param,
    ParamType,
    Port,
    Variant,
    WeightSpec,
)
from engine.errors import UnknownBlockError

if TYPE_CHECKING:
    from engine.graph import Graph

__all__ = [
    "BUFFER_UPDATES", "EVAL", "Block", "BlockSpec", "Category", "Context", "Example", "Kind", "Param", "ParamType", "Port", "Variant", "WeightSpec",
    "PaletteEntry", "register", "create", "names", "spec", "block_class", "expand", "palette",
]

_REGISTRY: dict[str, type[Block]] = {}


def register(cls: type[Block]) -> type[Block]:
    """Class decorator adding a block type to the registry."""
    if not cls.type_id:
        raise TypeError(f"{cls.__name__} has no type_id")
    if cls.type_id in _REGISTRY and _REGISTRY[cls.type_id] is not cls:
        raise TypeError(f"block type id {cls.type_id!r} registered twice")
    _REGISTRY[cls.type_id] = cls
    return cls


def _load_families() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def block_class(type_id: str) -> type[Block]:
    try:
        return _REGISTRY[type_id]
    except KeyError:
        raise UnknownBlockError(f"unknown block type {type_id!r}") from None


def create(type_id: str, **params: Any) -> Block:
    """A block instance with validated params (unknown block or param -> clear error)."""
    return block_class(type_id)(**params)


def names() -> list[str]:
    """Every registered type id, sorted."""
    return sorted(_REGISTRY)


def spec(type_id: str) -> BlockSpec:
    return block_class(type_id).spec()


def expand(type_id: str, params: Mapping[str, Any] | None = None) -> "Graph":
    """The inner graph of a composite block."""
    block = create(type_id, **dict(params or {}))
    graph = block.expand()
    if graph is None:
        raise UnknownBlockError(f"{type_id} is not a composite block; it has no inner graph")
    return graph


@dataclass(frozen=True)
class PaletteEntry:
    label: str
    type_id: str
    params: Mapping[str, Any]
    category: Category
    spec: BlockSpec


def palette() -> list[PaletteEntry]:
    """Palette entries grouped by category: each block, or each of its variants."""
    order = list(Category)
    entries: list[PaletteEntry] = []
    for type_id in names():
        s = spec(type_id)
        if s.variants:
            entries.extend(PaletteEntry(v.label, type_id, dict(v.params), s.category, s) for v in s.variants)
        else:
            entries.append(PaletteEntry(type_id, type_id, {}, s.category, s))
    entries.sort(key=lambda e: (order.index(e.category), e.label.lower()))
    return entries


_load_families()

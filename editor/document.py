"""The document: the ONLY thing in the editor that mutates a graph.

A :class:`Document` wraps an :class:`engine.graph.Graph` and announces every change with a
snake_case signal (``node_added``, ``link_removed``, ...). Commands (:mod:`editor.commands`)
call these methods and nothing else; the scene and panels listen to the signals. Nothing here
knows about colours, items or widgets.

Undo must restore a graph *exactly* (node order, link order, params), so removals return what
they removed together with where it was, and the ``restore_*`` / ``insert_*`` methods put it
back at the same place.

Edits of many nodes at once (delete, paste, undo of either) cost one pass over the graph, not
one per node, and run inside :meth:`Document.batch`, whose ``batch_started`` / ``batch_finished``
let listeners do their own updates once per batch (the scene: one selection change, one routing
of the wires).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from PySide6.QtCore import QObject, Signal

from engine.graph import Graph, Link, Node, Removed, ShapeReport


class ReadOnlyError(RuntimeError):
    """An edit was attempted on a read-only document (the inside of a composite)."""


class Document(QObject):
    """A graph plus the signals that tell the scene and panels what changed."""

    node_added = Signal(str)
    node_removed = Signal(str)
    link_added = Signal(object)  # engine.graph.Link
    link_removed = Signal(object)
    params_changed = Signal(str)
    node_moved = Signal(str)
    node_renamed = Signal(str)
    # Emitted once after every edit (or batch of edits) that can change shapes; listeners call
    # :meth:`report` which the graph caches per revision.
    shapes_changed = Signal()
    # The whole graph was replaced (New / Open): listeners rebuild from scratch.
    graph_reset = Signal()
    # The outermost :meth:`batch` begins / ends (after its ``shapes_changed``).
    batch_started = Signal()
    batch_finished = Signal()

    def __init__(self, graph: Graph | None = None, *, read_only: bool = False, title: str = "",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._graph = graph if graph is not None else Graph()
        self.read_only = read_only
        self.title = title
        self.path: Path | None = None
        self.project: Any = None  # engine.serialize.Project when loaded from a file
        self._batch = 0
        self._dirty_shapes = False

    # --- queries -----------------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """The graph, for reading. Never mutate it directly: call the document's methods."""
        return self._graph

    def node(self, node_id: str) -> Node:
        return self._graph.node(node_id)

    def report(self) -> ShapeReport:
        return self._graph.infer()

    def dump(self) -> dict[str, Any]:
        """A canonical, order-preserving dump of the graph (for undo checks and the clipboard)."""
        return {
            "nodes": [
                {"id": n.id, "type": n.type, "params": _plain(n.params), "name": n.name,
                 "position": [n.position[0], n.position[1]]}
                for n in self._graph.nodes.values()
            ],
            "links": [[l.src, l.src_port, l.dst, l.dst_port] for l in self._graph.links],
        }

    # --- batching ------------------------------------------------------------------------------

    @property
    def in_batch(self) -> bool:
        """True inside :meth:`batch` (listeners may leave per-item work to ``batch_finished``)."""
        return self._batch > 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group edits: ``shapes_changed`` is emitted once at the end instead of once per edit
        (pasting or expanding hundreds of nodes would otherwise re-infer hundreds of times)."""
        self._batch += 1
        if self._batch == 1:
            self.batch_started.emit()
        try:
            yield
        finally:
            self._batch -= 1
            if self._batch == 0:
                if self._dirty_shapes:
                    self._dirty_shapes = False
                    self.shapes_changed.emit()
                self.batch_finished.emit()

    def _shapes_dirty(self) -> None:
        if self._batch:
            self._dirty_shapes = True
        else:
            self.shapes_changed.emit()

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.title or 'this graph'} is read-only (the inside of a composite block); "
                                "use Expand to edit its nodes")

    # --- edits -------------------------------------------------------------------------------

    def set_graph(self, graph: Graph) -> None:
        """Replace the whole graph (New / Open); not undoable, the undo stack is cleared."""
        self._graph = graph
        self.graph_reset.emit()
        self.shapes_changed.emit()

    def add_node(self, type_id: str, params: Mapping[str, Any] | None = None, *, node_id: str | None = None,
                 name: str | None = None, position: tuple[float, float] = (0.0, 0.0),
                 allow_unknown: bool = False) -> Node:
        self._check_writable()
        node = self._graph.add_node(type_id, params, node_id=node_id, name=name, position=position,
                                    allow_unknown=allow_unknown)
        self.node_added.emit(node.id)
        self._shapes_dirty()
        return node

    def remove_items(self, node_ids: Iterable[str] = (), links: Iterable[Link] = ()) -> Removed:
        """Remove nodes (with every link touching them) and links in one pass over the graph;
        returns what went and where, for :meth:`restore_items`."""
        self._check_writable()
        with self.batch():
            removed = self._graph.remove(node_ids, links)
            for _, link in removed.links:
                self.link_removed.emit(link)
            for _, node in removed.nodes:
                self.node_removed.emit(node.id)
            self._shapes_dirty()
        return removed

    def restore_items(self, removed: Removed) -> None:
        """Undo :meth:`remove_items`: the same nodes and links, at the same places."""
        self._check_writable()
        with self.batch():
            self._graph.restore(removed)
            for _, node in removed.nodes:
                self.node_added.emit(node.id)
            for _, link in removed.links:
                self.link_added.emit(link)
            self._shapes_dirty()

    def remove_node(self, node_id: str) -> Removed:
        """Remove one node and its links (see :meth:`remove_items`)."""
        return self.remove_items([node_id])

    def restore_node(self, removed: Removed) -> None:
        """Undo :meth:`remove_node`: the same node, at the same place, with the same links."""
        self.restore_items(removed)

    def connect(self, src: str, src_port: str, dst: str, dst_port: str, *, replace: bool = True
                ) -> tuple[Link, tuple[int, Link] | None]:
        """Validated link (raises the engine's typed errors). Returns the link and, when it
        replaced one, ``(index, old_link)`` so undo can put the old one back."""
        self._check_writable()
        g = self._graph
        old = g.link_into(dst, dst_port)
        old_index = g.links.index(old) if old is not None else -1
        link, replaced = g.connect(src, src_port, dst, dst_port, replace=replace)
        if replaced is not None:
            self.link_removed.emit(replaced)
        self.link_added.emit(link)
        self._shapes_dirty()
        return link, ((old_index, replaced) if replaced is not None else None)

    def insert_link(self, link: Link, index: int | None = None, *, _notify: bool = True) -> None:
        """Add a link known to be valid (undo, paste of internal links) at ``index``."""
        self._check_writable()
        g = self._graph
        g.add_link(link)
        if index is not None and 0 <= index < len(g.links) - 1:
            g.links.insert(index, g.links.pop())
        self.link_added.emit(link)
        if _notify:
            self._shapes_dirty()

    def remove_link(self, link: Link) -> int:
        """Remove a link; returns where it was."""
        self._check_writable()
        index = self._graph.links.index(link)
        self._graph.disconnect(link)
        self.link_removed.emit(link)
        self._shapes_dirty()
        return index

    def set_params(self, node_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Validated param change (raises ParamError); returns the previous values."""
        self._check_writable()
        old = self._graph.set_params(node_id, changes)
        self.params_changed.emit(node_id)
        self._shapes_dirty()
        return old

    def rename(self, node_id: str, name: str) -> str:
        self._check_writable()
        old = self._graph.rename(node_id, name)
        self.node_renamed.emit(node_id)
        # Names appear in error messages, so the report may read differently.
        self._shapes_dirty()
        return old

    def move(self, node_id: str, position: tuple[float, float]) -> tuple[float, float]:
        # Moving is allowed in read-only views too: it is layout, not content.
        old = self._graph.move(node_id, position)
        self.node_moved.emit(node_id)
        return old


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so dumps compare equal however params were typed."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

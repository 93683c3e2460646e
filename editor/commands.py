"""Undoable edits. Each command calls :class:`editor.document.Document` methods and nothing else.

One user gesture is one command: a drag is one :class:`MoveNodesCommand`, deleting nodes takes
their links with them in one :class:`RemoveItemsCommand`, dropping a wire on an occupied input
replaces the old link inside one :class:`ConnectCommand`, and a slider drag merges into one
:class:`SetParamsCommand` through ``mergeWith``.

Commands validate in their constructor (raising the engine's typed errors) so that a command
that reaches the undo stack cannot fail in ``redo``.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from PySide6.QtGui import QUndoCommand

from editor.document import Document
from engine import blocks
from engine.errors import GraphError
from engine.graph import Link, Removed, short

# Command ids for mergeWith (Qt requires a distinct int per mergeable class).
_SET_PARAMS_ID = 1001
_MOVE_ID = 1002


class MacroCommand(QUndoCommand):
    """Several commands as one undo step: ``redo`` runs them in order, ``undo`` in reverse.

    NOTE: not Qt's ``QUndoCommand(parent)`` children: with PySide6 a Python command parented to
    another is deleted twice when the stack goes (a crash in ~QUndoCommand); here Python owns
    the children and only the macro goes on the stack."""

    def __init__(self, text: str, children: list[QUndoCommand]) -> None:
        super().__init__(text)
        self.children_ = list(children)

    def redo(self) -> None:
        for c in self.children_:
            c.redo()

    def undo(self) -> None:
        for c in reversed(self.children_):
            c.undo()


class AddNodeCommand(QUndoCommand):
    """Add one block (palette drop, search popup)."""

    def __init__(self, doc: Document, type_id: str, params: Mapping[str, Any] | None = None, *,
                 position: tuple[float, float] = (0.0, 0.0), name: str | None = None,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        blocks.create(type_id, **dict(params or {}))  # raises UnknownBlockError / ParamError now
        self.doc = doc
        self.type_id = type_id
        self.params = dict(params or {})
        self.position = position
        self.name = name if name is not None else doc.graph.unique_name(type_id)
        self.node_id = str(uuid.uuid4())
        self.setText(f"Add {short(self.name)}")

    def redo(self) -> None:
        self.doc.add_node(self.type_id, self.params, node_id=self.node_id, name=self.name, position=self.position)

    def undo(self) -> None:
        self.doc.remove_node(self.node_id)


class RemoveItemsCommand(QUndoCommand):
    """Delete nodes (with every link touching them) and links, as one step (one pass over the
    graph however many there are)."""

    def __init__(self, doc: Document, node_ids: list[str], links: list[Link] = (), *,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        wanted = set(node_ids)
        self.node_ids = [n for n in doc.graph.nodes if n in wanted]
        gone = set(self.node_ids)
        present = set(doc.graph.links)
        self.links = [l for l in links if l.src not in gone and l.dst not in gone and l in present]
        self._removed: Removed | None = None
        what = []
        if self.node_ids:
            what.append(f"{len(self.node_ids)} node{'s' if len(self.node_ids) != 1 else ''}")
        if self.links:
            what.append(f"{len(self.links)} link{'s' if len(self.links) != 1 else ''}")
        self.setText("Delete " + " and ".join(what))

    def redo(self) -> None:
        self._removed = self.doc.remove_items(self.node_ids, self.links)

    def undo(self) -> None:
        self.doc.restore_items(self._removed)


class ConnectCommand(QUndoCommand):
    """Wire an output to an input; an occupied input's old link is replaced in the same step."""

    def __init__(self, doc: Document, src: str, src_port: str, dst: str, dst_port: str, *,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        doc.graph.check_link(src, src_port, dst, dst_port, replace=True)  # typed error, nothing pushed
        self.doc = doc
        self.args = (src, src_port, dst, dst_port)
        self.link: Link | None = None
        self.replaced: tuple[int, Link] | None = None
        a, b = doc.node(src), doc.node(dst)
        replacing = doc.graph.link_into(dst, dst_port) is not None
        self.setText(f"{'Replace link into' if replacing else 'Connect'} {short(b.name)}.{dst_port} from {short(a.name)}.{src_port}")

    def redo(self) -> None:
        self.link, self.replaced = self.doc.connect(*self.args, replace=True)

    def undo(self) -> None:
        with self.doc.batch():
            self.doc.remove_link(self.link)
            if self.replaced is not None:
                index, old = self.replaced
                self.doc.insert_link(old, index)


class MoveNodesCommand(QUndoCommand):
    """Move nodes (a whole drag, or an auto-layout) as one step."""

    def __init__(self, doc: Document, moves: Mapping[str, tuple[tuple[float, float], tuple[float, float]]],
                 text: str = "", *, parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.moves = {k: (tuple(map(float, a)), tuple(map(float, b))) for k, (a, b) in moves.items()}
        n = len(self.moves)
        self.setText(text or f"Move {n} node{'s' if n != 1 else ''}")

    def redo(self) -> None:
        for nid, (_, new) in self.moves.items():
            self.doc.move(nid, new)

    def undo(self) -> None:
        for nid, (old, _) in self.moves.items():
            self.doc.move(nid, old)


class SetParamsCommand(QUndoCommand):
    """Change a node's params. With ``merge_key`` set, consecutive changes with the same key
    (one slider drag) merge into one undo step."""

    def __init__(self, doc: Document, node_id: str, changes: Mapping[str, Any], *, merge_key: str = "",
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        node = doc.node(node_id)
        # The engine's whole check (types, ranges, the block's cross-checks, params naming another
        # node): a refused value raises its message here, where the inspector shows it, and
        # nothing reaches the stack whose redo could fail.
        doc.graph.check_params(node_id, changes)
        self.doc = doc
        self.node_id = node_id
        self.changes = dict(changes)
        self.old = {k: node.params.get(k) for k in changes}
        self.merge_key = merge_key
        self.setText(f"Set {', '.join(self.changes)} of {short(node.name)}")

    def id(self) -> int:
        return _SET_PARAMS_ID if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetParamsCommand) or other.node_id != self.node_id \
                or other.merge_key != self.merge_key or set(other.changes) != set(self.changes):
            return False
        self.changes = dict(other.changes)
        return True

    def redo(self) -> None:
        self.doc.set_params(self.node_id, self.changes)

    def undo(self) -> None:
        self.doc.set_params(self.node_id, self.old)


class RenameCommand(QUndoCommand):
    def __init__(self, doc: Document, node_id: str, name: str, *, parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.node_id = node_id
        self.name = name
        self.old = doc.node(node_id).name
        self.setText(f"Rename {short(self.old)} to {short(name)}")

    def redo(self) -> None:
        self.doc.rename(self.node_id, self.name)

    def undo(self) -> None:
        self.doc.rename(self.node_id, self.old)


def clip_selection(doc: Document, node_ids: list[str]) -> dict[str, Any]:
    """The clipboard form of a selection: its nodes and the links among them (internal links
    only: a pasted copy cannot keep wires to nodes outside it). Same layout as
    :func:`engine.serialize.graph_to_dict`."""
    from engine.serialize import graph_to_dict

    return graph_to_dict(doc.graph, node_ids)


def _clip_links(clip: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for l in clip.get("links", []):
        if isinstance(l, Mapping):
            (a, ap), (b, bp) = l["from"], l["to"]
        else:
            a, ap, b, bp = l
        out.append((str(a), str(ap), str(b), str(bp)))
    return out


class PasteCommand(QUndoCommand):
    """Insert clipboard nodes (fresh ids, unique names, offset) with their internal links.

    The clipboard may hold anything (it is text), so it is validated as a graph first by the
    file loader's own checks (types, params, ports, kinds, cycles): a bad clip raises the
    loader's FileFormatError and nothing is pushed. References between pasted nodes (a tied
    embedding's ``tie_to``) follow them to their new ids."""

    def __init__(self, doc: Document, clip: Mapping[str, Any], offset: tuple[float, float] = (30.0, 30.0),
                 text: str = "Paste", *, parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        from engine.serialize import graph_from_dict

        self.doc = doc
        links = _clip_links(clip)
        checked = graph_from_dict({"nodes": list(clip.get("nodes", [])),
                                   "links": [{"from": [a, ap], "to": [b, bp]} for a, ap, b, bp in links]})
        remap = {nid: str(uuid.uuid4()) for nid in checked.nodes}
        taken = {n.name for n in doc.graph.nodes.values()}
        self.nodes: list[dict[str, Any]] = []
        for n in checked.nodes.values():
            name = _fresh_name(n.name or n.type, taken)
            taken.add(name)
            params = dict(n.params)
            if n.block is not None:
                for p in n.block.params:
                    if p.type is blocks.ParamType.NODE and params.get(p.name) in remap:
                        params[p.name] = remap[params[p.name]]
            x, y = n.position
            self.nodes.append({"id": remap[n.id], "type": n.type, "params": params,
                               "name": name, "position": (float(x) + offset[0], float(y) + offset[1])})
        self.links = [Link(remap[l.src], l.src_port, remap[l.dst], l.dst_port) for l in checked.links]
        self.node_ids = [n["id"] for n in self.nodes]
        self.setText(f"{text} {len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}")

    def redo(self) -> None:
        with self.doc.batch():
            for n in self.nodes:
                self.doc.add_node(n["type"], n["params"], node_id=n["id"], name=n["name"], position=n["position"])
            for link in self.links:
                self.doc.insert_link(link)

    def undo(self) -> None:
        self.doc.remove_items(self.node_ids)  # the pasted links touch only pasted nodes: they go too


def _fresh_name(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    stem = base
    parts = base.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].isdigit():
        stem = parts[0]
    i = 2
    while f"{stem} {i}" in taken:
        i += 1
    return f"{stem} {i}"


class ExpandCompositeCommand(QUndoCommand):
    """Replace a composite node by its inner nodes, wired to the composite's neighbours.

    The inner graph is built for the shapes actually arriving at the composite (so it matches
    what runs); inner ``Input`` nodes of connected ports give way to the outside source, and the
    ``Output`` markers give way to the outside consumers. Node-valued params (a tied embedding)
    are remapped to the new ids."""

    def __init__(self, doc: Document, node_id: str, *, size_of: Any = None, scale: Any = 1.0,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(parent)
        g = doc.graph
        node = doc.node(node_id)
        # With ``size_of`` the whole graph is laid out again after expanding (same undo step),
        # so the inner nodes do not pile up on their neighbours.
        self.size_of = size_of
        self.scale = scale
        self.layout: dict[str, tuple[tuple[float, float], tuple[float, float]]] | None = None
        spec = blocks.spec(node.type) if node.block is not None else None
        if spec is None or not spec.composite:
            raise GraphError(f"{node.label} is not a composite block; only composites can be expanded")
        inner = inner_graph(doc, node_id)
        self.doc = doc
        self.node_id = node_id
        in_ports = {p.name for p in node.input_ports()}
        out_ports = {p.name for p in node.output_ports()}
        outside_in = {l.dst_port: l for l in g.links if l.dst == node_id}
        # An inner Input standing for a connected port is replaced by the outside source.
        replaced_inputs = {nid for nid, n in inner.nodes.items()
                           if n.type == "Input" and nid in in_ports and nid in outside_in}
        markers = {nid for nid, n in inner.nodes.items() if n.type == "Output" and nid in out_ports}
        ox, oy = node.position
        xs = [n.position[0] for nid, n in inner.nodes.items() if nid not in replaced_inputs | markers]
        ys = [n.position[1] for nid, n in inner.nodes.items() if nid not in replaced_inputs | markers]
        dx, dy = ox - min(xs, default=0.0), oy - min(ys, default=0.0)
        remap = {nid: str(uuid.uuid4()) for nid in inner.nodes if nid not in replaced_inputs | markers}
        taken = {n.name for n in g.nodes.values() if n.id != node_id}
        self.new_nodes: list[dict[str, Any]] = []
        for nid, n in inner.nodes.items():
            if nid not in remap:
                continue
            params = dict(n.params)
            if n.block is not None:
                for p in n.block.params:
                    if p.type is blocks.ParamType.NODE and params.get(p.name):
                        params[p.name] = remap.get(params[p.name], params[p.name])
            name = _fresh_name(f"{node.name}/{n.name}", taken)
            taken.add(name)
            self.new_nodes.append({"id": remap[nid], "type": n.type, "params": params, "name": name,
                                   "position": (n.position[0] + dx, n.position[1] + dy)})

        def source(nid: str, port: str) -> tuple[str, str] | None:
            # Where a value really comes from, seen from outside.
            if nid in replaced_inputs:
                link = outside_in[nid]
                return link.src, link.src_port
            if nid in markers:
                into = inner.link_into(nid, "x")
                return source(into.src, into.src_port) if into is not None else None
            return remap[nid], port

        self.new_links: list[Link] = []
        for l in inner.links:
            if l.dst in markers or l.dst in replaced_inputs:
                continue
            src = source(l.src, l.src_port)
            if src is not None:
                self.new_links.append(Link(src[0], src[1], remap[l.dst], l.dst_port))
        for l in g.links:
            if l.src == node_id and l.src_port in markers:
                src = source(l.src_port, "out")
                if src is not None:
                    self.new_links.append(Link(src[0], src[1], l.dst, l.dst_port))
        self.removed = None
        self.setText(f"Expand {short(node.name)}")

    def redo(self) -> None:
        with self.doc.batch():
            self.removed = self.doc.remove_node(self.node_id)
            for n in self.new_nodes:
                self.doc.add_node(n["type"], n["params"], node_id=n["id"], name=n["name"], position=n["position"])
            for link in self.new_links:
                self.doc.insert_link(link)
        if self.size_of is not None:
            if self.layout is None:
                from editor.layout import layered_positions
                g = self.doc.graph
                origin = min((n.position for n in g.nodes.values()), default=(0.0, 0.0))
                positions = layered_positions(g, self.size_of, origin=origin, scale=self.scale)
                self.layout = {nid: (g.nodes[nid].position, pos) for nid, pos in positions.items()}
            for nid, (_, new) in self.layout.items():
                self.doc.move(nid, new)

    def undo(self) -> None:
        if self.layout is not None:
            for nid, (old, _) in self.layout.items():
                self.doc.move(nid, old)
        with self.doc.batch():
            self.doc.remove_items([n["id"] for n in self.new_nodes], self.new_links)
            self.doc.restore_node(self.removed)


def inner_graph(doc: Document, node_id: str):  # -> engine.graph.Graph
    """A composite node's inner graph, built for the shapes arriving at it when they are known
    (so it is the graph that actually runs), else for the block's example shapes."""
    node = doc.node(node_id)
    build = getattr(node.block, "build", None)
    in_shapes = doc.graph.input_shapes(node_id) if node.block is not None else None
    if build is not None and in_shapes is not None and node_id not in doc.report().errors:
        try:
            return build(in_shapes)
        except Exception:  # noqa: BLE001 - fall back to the example shapes below
            pass
    return blocks.expand(node.type, node.params)


def auto_layout_command(doc: Document, size_of: Any, nodes: list[str] | None = None,
                        scale: Any = 1.0, **hints: Any) -> MoveNodesCommand | None:
    """Auto-layout as one undoable move (None when nothing would move). ``hints`` go to
    :func:`editor.layout.layered_positions` (the view's size, so the layout fits it; wire text
    widths; port heights)."""
    from editor.layout import layered_positions

    g = doc.graph
    if nodes:
        first = min((g.nodes[n].position for n in nodes), default=(0.0, 0.0))
    else:
        first = min((n.position for n in g.nodes.values()), default=(0.0, 0.0))
    positions = layered_positions(g, size_of, origin=first, nodes=nodes, scale=scale, **hints)
    moves = {nid: (g.nodes[nid].position, pos) for nid, pos in positions.items()
             if tuple(g.nodes[nid].position) != tuple(pos)}
    if not moves:
        return None
    return MoveNodesCommand(doc, moves, "Auto-layout")

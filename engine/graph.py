"""The document model: nodes, links, params and positions, with validation.

A :class:`Graph` is plain data plus checks. Every edit either succeeds completely or raises a
typed :mod:`engine.errors` exception whose message a person can act on, leaving the graph as it
was. Shape inference (:meth:`Graph.infer`) runs over the whole graph without computing any
numbers and reports, per node, either its output shapes or the reason they cannot be computed.

Edits bump :attr:`Graph.revision`; derived things (the topological order, the shape report)
are computed once per revision and reused.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, TypeVar

from engine import blocks
from engine.blocks import Block, Kind, ParamType, Port
if TYPE_CHECKING:
    import networkx as nx

from engine.errors import (
    CycleError,
    GraphError,
    ParamError,
    PortError,
    PortKindError,
    PortOccupiedError,
    ShapeError,
    UnknownBlockError,
)

Shape = tuple[int, ...]
MAX_LABEL = 60  # characters of a name that messages quote


def short(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: names and values in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Link:
    """A wire from an output port to an input port."""

    src: str
    src_port: str
    dst: str
    dst_port: str


@dataclass
class Node:
    """One block in the graph. ``block`` is None for a placeholder (an unknown type kept so that
    nothing in a file from a newer version or a plugin is lost)."""

    id: str
    type: str
    params: dict[str, Any]
    name: str
    position: tuple[float, float] = (0.0, 0.0)
    block: Block | None = field(default=None, repr=False, compare=False)
    placeholder_ports: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    @property
    def is_placeholder(self) -> bool:
        return self.block is None

    @property
    def label(self) -> str:
        """How messages name the node: its name in quotes (shortened past
        :data:`MAX_LABEL` characters, so a huge name cannot make a huge message)."""
        return f"'{short(self.name)}'" if self.name else f"{short(self.type)} {self.id[:8]}"

    def about(self, message: str) -> str:
        """``message`` (a block's, which starts with its type) said of this node, naming the
        node once: "'d' (Dot): last dimensions differ…", or "Dot: …" for a node named Dot."""
        if not message.startswith(f"{self.type}: "):
            return f"{self.label}: {message}"
        rest = message[len(self.type) + 2:]
        who = self.type if self.name in ("", self.type) else f"{self.label} ({self.type})"
        return f"{who}: {rest}"

    def input_ports(self) -> tuple[Port, ...]:
        if self.block is None:
            return tuple(Port(n, Kind.ANY, optional=True) for n in self.placeholder_ports[0])
        return self.block.input_ports()

    def output_ports(self) -> tuple[Port, ...]:
        if self.block is None:
            return tuple(Port(n, Kind.ANY) for n in self.placeholder_ports[1])
        return self.block.output_ports()

    def output_kind(self, port: str) -> Kind:
        return Kind.ANY if self.block is None else self.block.output_kind(port)


def sharing_problem(owner: Node | None, owner_id: str, weight: str) -> str | None:
    """Why ``owner`` cannot lend its weight ``weight`` to another node (None: it can)."""
    if owner is None:
        return f"names node {owner_id!r}, which is not in this graph"
    if owner.block is None:
        return f"names {owner.label}, a placeholder for the unknown block {owner.type!r}"
    if weight not in {w.name for w in owner.block.weights}:
        return f"names {owner.label} ({owner.type}), which has no weight '{weight}' to share"
    if weight in owner.block.shared_weights():
        return (f"names {owner.label} ({owner.type}), which borrows its '{weight}' from another node itself; "
                f"name the node that owns it")
    return None


def check_references(node_id: str, block: Block, lookup: Mapping[str, Node], *, strict: bool) -> None:
    """Check the params that name another node (``tie_to``); raise ParamError naming the param.

    Never acceptable: a node naming itself, or a node whose type has no such weight. With
    ``strict`` (an edit the user is making now) also: a node that is not in the graph, a
    placeholder, or one that borrows the weight itself. Without it (loading a file, pasting
    nodes in any order) those are left to shape inference, which shows them on the node: later
    edits elsewhere can make them so, and a file must still open."""
    for local, (owner_id, weight) in block.shared_weights().items():
        param = next((p.name for p in block.params if p.type is ParamType.NODE and block.p.get(p.name) == owner_id), local)
        where = f"{block.type_id}: parameter '{param}'"
        if owner_id == node_id:
            raise ParamError(f"{where} names this node itself; it must name another node whose '{weight}' this one shares")
        owner = lookup.get(owner_id)
        problem = sharing_problem(owner, owner_id, weight)
        if problem is None:
            continue
        type_wrong = owner is not None and owner.block is not None and weight not in {w.name for w in owner.block.weights}
        if strict or type_wrong:
            raise ParamError(f"{where} {problem}")


@dataclass(frozen=True)
class Removed:
    """What :meth:`Graph.remove` took out, and where each piece was (for an exact undo)."""

    nodes: tuple[tuple[int, Node], ...]  # (index in the node order before the removal, node), ascending
    links: tuple[tuple[int, Link], ...]  # (index in Graph.links before the removal, link), ascending
    # The graph's revision just after the removal, and what it had derived before it (shape
    # report, order, ...): a restore straight after the removal (no edit in between) brings back
    # the very graph those were derived from, so it reuses them instead of deriving them again.
    revision: int = -1
    derived: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# Cache entries that depend only on the graph's content (never on positions or run state), so
# an exact restore may reuse them; ``memory:*`` are the memory estimates (engine.memory).
_RESTORABLE = frozenset({"into", "order", "infer", "parameters"})


_T = TypeVar("_T")
_MISSING = object()


def _merge(rest: Iterable[_T], placed: Sequence[tuple[int, _T]]) -> list[_T]:
    """``rest`` with each of ``placed``'s items put back at its index (ascending): the list
    they were taken out of."""
    out: list[_T] = []
    it = iter(rest)
    for index, item in placed:
        while len(out) < index:
            nxt = next(it, _MISSING)
            if nxt is _MISSING:
                break
            out.append(nxt)  # type: ignore[arg-type]
        out.append(item)
    out.extend(it)
    return out


@dataclass(frozen=True)
class ShapeReport:
    """Result of shape inference over a whole graph.

    ``shapes[(node, port)]`` is known for every output that could be inferred; ``errors[node]``
    holds the reason a node's shapes could not be inferred (a :class:`ShapeError` message);
    ``incomplete`` lists nodes missing a required input (no error, just not yet wired)."""

    shapes: Mapping[tuple[str, str], Shape]
    kinds: Mapping[tuple[str, str], Kind]
    errors: Mapping[str, str]
    incomplete: frozenset[str]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.incomplete


class Graph:
    """A DAG of blocks. See the module docstring."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self.revision = 0
        self._cache: dict[str, tuple[int, Any]] = {}

    # --- queries ---------------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"there is no node with id {node_id!r}") from None

    def find(self, key: str) -> Node:
        """A node by id, by unique name, or by unique id prefix (for the CLI and presets)."""
        if key in self.nodes:
            return self.nodes[key]
        named = [n for n in self.nodes.values() if n.name == key]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise GraphError(f"{len(named)} nodes are named {key!r}; use a node id")
        prefixed = [n for n in self.nodes.values() if n.id.startswith(key)]
        if len(prefixed) == 1:
            return prefixed[0]
        raise GraphError(f"no node is named {key!r}")

    def _links_by_dst(self) -> dict[tuple[str, str], Link]:
        cached = self._cache.get("into")
        if cached and cached[0] == self.revision:
            return cached[1]
        index = {(l.dst, l.dst_port): l for l in self.links}
        self._cache["into"] = (self.revision, index)
        return index

    def link_into(self, node_id: str, port: str) -> Link | None:
        return self._links_by_dst().get((node_id, port))

    def links_of(self, node_id: str) -> list[Link]:
        return [l for l in self.links if l.src == node_id or l.dst == node_id]

    def to_networkx(self) -> "nx.MultiDiGraph":
        import networkx as nx  # NOTE: here, not at the top: ~0.2 s to import, and the CLI's quick commands never need it

        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes)
        for link in self.links:
            g.add_edge(link.src, link.dst, src_port=link.src_port, dst_port=link.dst_port)
        for node in self.nodes.values():
            if node.block is not None:
                for owner, _ in node.block.shared_weights().values():
                    if owner in self.nodes:
                        g.add_node(owner)
        return g

    def topological_order(self) -> tuple[str, ...]:
        """Node ids in a deterministic topological order (ties broken by insertion order)."""
        cached = self._cache.get("order")
        if cached and cached[0] == self.revision:
            return cached[1]
        # Kahn's algorithm taking the earliest-inserted ready node first (what networkx's
        # lexicographical_topological_sort does), in a few lines of stdlib.
        position = {nid: i for i, nid in enumerate(self.nodes)}
        indegree = dict.fromkeys(self.nodes, 0)
        for link in self.links:
            indegree[link.dst] += 1
        ready = [(position[n], n) for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        successors = self._successors()
        order_list: list[str] = []
        while ready:
            _, nid = heapq.heappop(ready)
            order_list.append(nid)
            for nxt in successors[nid]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, (position[nxt], nxt))
        if len(order_list) != len(self.nodes):
            raise CycleError("the graph has a cycle; a graph must flow one way", [])
        order = tuple(order_list)
        self._cache["order"] = (self.revision, order)
        return order

    def _successors(self) -> dict[str, list[str]]:
        """Node id → the ids its links go into (once per link), in link order."""
        out: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for link in self.links:
            out[link.src].append(link.dst)
        return out

    def _path(self, start: str, goal: str) -> list[str] | None:
        """A shortest chain of links from ``start`` to ``goal`` (breadth first), or None."""
        successors = self._successors()
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            nid = queue.popleft()
            if nid == goal:
                path = [nid]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            for nxt in successors[nid]:
                if nxt not in came_from:
                    came_from[nxt] = nid
                    queue.append(nxt)
        return None

    # --- edits -----------------------------------------------------------------------------

    def _touch(self) -> None:
        self.revision += 1

    def unique_name(self, base: str) -> str:
        taken = {n.name for n in self.nodes.values()}
        if base not in taken:
            return base
        i = 2
        while f"{base} {i}" in taken:
            i += 1
        return f"{base} {i}"

    def add_node(
        self,
        type_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        node_id: str | None = None,
        name: str | None = None,
        position: tuple[float, float] = (0.0, 0.0),
        allow_unknown: bool = False,
    ) -> Node:
        """Add a block; raises UnknownBlockError / ParamError. With ``allow_unknown`` an unknown
        type becomes a placeholder node that keeps its params."""
        node_id = node_id or str(uuid.uuid4())
        if node_id in self.nodes:
            raise GraphError(f"a node with id {node_id!r} already exists")
        params = dict(params or {})
        try:
            block = blocks.create(type_id, **params)
            params = dict(block.p)
        except UnknownBlockError:
            if not allow_unknown:
                raise
            block = None
        if block is not None:
            check_references(node_id, block, self.nodes, strict=False)
        node = Node(node_id, type_id, params, name if name is not None else self.unique_name(type_id),
                    (float(position[0]), float(position[1])), block)
        self.nodes[node_id] = node
        self._touch()
        return node

    def remove(self, node_ids: Iterable[str] = (), links: Iterable[Link] = ()) -> Removed:
        """Remove nodes (with every link touching them) and links, in one pass over the graph
        however many there are; returns what went and where, for :meth:`restore`."""
        gone = set(node_ids)
        for nid in gone:
            self.node(nid)
        drop = set(links)
        if drop - set(self.links):
            raise GraphError("that link does not exist")
        removed_links = tuple((i, l) for i, l in enumerate(self.links) if l in drop or l.src in gone or l.dst in gone)
        removed_nodes = tuple((i, n) for i, (nid, n) in enumerate(self.nodes.items()) if nid in gone)
        derived = {k: v for k, (rev, v) in self._cache.items()
                   if rev == self.revision and (k in _RESTORABLE or k.startswith("memory:"))}
        if removed_links:
            taken = {l for _, l in removed_links}
            self.links = [l for l in self.links if l not in taken]
        if removed_nodes:
            self.nodes = {k: v for k, v in self.nodes.items() if k not in gone}
        self._touch()
        return Removed(removed_nodes, removed_links, self.revision, derived)

    def restore(self, removed: Removed) -> None:
        """Undo :meth:`remove`: the same nodes and links, back at the same places (node order
        breaks ties in the topological order and is what a save writes)."""
        clash = [n.id for _, n in removed.nodes if n.id in self.nodes]
        if clash:
            raise GraphError(f"a node with id {clash[0]!r} already exists")
        pairs = _merge(self.nodes.items(), [(i, (n.id, n)) for i, n in removed.nodes])
        self.nodes = dict(pairs)
        exact = removed.revision == self.revision  # nothing changed since the removal
        self.links = _merge(self.links, removed.links)
        self._touch()
        if exact:
            for key, value in removed.derived.items():
                self._cache[key] = (self.revision, value)

    def remove_node(self, node_id: str) -> list[Link]:
        """Remove a node and its links; returns the removed links (for undo)."""
        self.node(node_id)
        removed = self.links_of(node_id)
        self.links = [l for l in self.links if l not in removed]
        del self.nodes[node_id]
        self._touch()
        return removed

    def check_params(self, node_id: str, changes: Mapping[str, Any]) -> Block:
        """The block :meth:`set_params` would make, or the ParamError / GraphError it would
        raise, without changing anything: every param's type and range, the block's own
        cross-checks, and params naming another node (see :func:`check_references`)."""
        node = self.node(node_id)
        if node.block is None:
            raise GraphError(f"{node.label} is a placeholder for unknown block {node.type!r}; its params cannot be edited")
        new = dict(node.params)
        new.update(changes)
        block = blocks.create(node.type, **new)
        check_references(node_id, block, self.nodes, strict=True)
        return block

    def set_params(self, node_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change params (validated as a whole by :meth:`check_params`); returns the previous
        values of those changed. Links to ports that no longer exist are not removed here: the
        node reports it."""
        node = self.node(node_id)
        block = self.check_params(node_id, changes)
        old = {k: node.params.get(k) for k in changes}
        node.params = dict(block.p)
        node.block = block
        self._touch()
        return old

    def rename(self, node_id: str, name: str) -> str:
        node = self.node(node_id)
        old, node.name = node.name, name
        self._touch()
        return old

    def move(self, node_id: str, position: tuple[float, float]) -> tuple[float, float]:
        """Move a node (editor metadata: does not bump the revision, shapes don't change)."""
        node = self.node(node_id)
        old, node.position = node.position, (float(position[0]), float(position[1]))
        return old

    def check_link(self, src: str, src_port: str, dst: str, dst_port: str, *, replace: bool = False) -> None:
        """Raise the error :meth:`connect` would raise, without changing anything."""
        a, b = self.node(src), self.node(dst)
        outs = {p.name: p for p in a.output_ports()}
        ins = {p.name: p for p in b.input_ports()}
        if src_port not in outs:
            raise PortError(f"{a.label} has no output '{src_port}' (outputs: {', '.join(outs) or 'none'})")
        if dst_port not in ins:
            raise PortError(f"{b.label} has no input '{dst_port}' (inputs: {', '.join(ins) or 'none'})")
        if src == dst:
            raise CycleError(f"a link from {a.label} to itself would make a cycle", [a.label])
        kind_out, kind_in = a.output_kind(src_port), ins[dst_port].kind
        if not kind_in.accepts(kind_out):
            what = {Kind.IDS: "token ids (integers)", Kind.FLOAT: "real numbers"}
            raise PortKindError(
                f"{b.label} input '{dst_port}' takes {what[kind_in]}, but {a.label} output "
                f"'{src_port}' gives {what[kind_out]}"
            )
        existing = self.link_into(dst, dst_port)
        if existing is not None and not replace:
            other = self.node(existing.src)
            raise PortOccupiedError(
                f"{b.label} input '{dst_port}' is already connected to {other.label} "
                f"'{existing.src_port}'; an input takes one link (drop on it to replace)"
            )
        path = self._path(dst, src)
        if path is not None:
            labels = [self.nodes[n].label for n in path] + [b.label]
            raise CycleError(
                f"this link would make a cycle: {' → '.join(labels)}; a graph must flow one way",
                labels,
            )
        self._check_link_shapes(b, dst_port, (src, src_port))

    def _check_link_shapes(self, dst: Node, dst_port: str, src: tuple[str, str]) -> None:
        """Refuse a link that would break the destination's shapes (only the destination: what
        it breaks further downstream shows as badges, so rewiring stays possible). O(ports)."""
        report = self.infer()
        if dst.block is None or src not in report.shapes or dst.id in report.errors:
            return
        in_shapes: dict[str, Shape] = {}
        for port in dst.block.input_ports():
            if port.name == dst_port:
                in_shapes[port.name] = report.shapes[src]
                continue
            link = self.link_into(dst.id, port.name)
            if link is not None and (link.src, link.src_port) in report.shapes:
                in_shapes[port.name] = report.shapes[(link.src, link.src_port)]
            elif not port.optional:
                return  # not all inputs known yet: nothing to refuse
        try:
            dst.block.infer_shapes(in_shapes)
        except ShapeError as exc:
            raise ShapeError(dst.about(str(exc))) from None

    def connect(self, src: str, src_port: str, dst: str, dst_port: str, *, replace: bool = False) -> tuple[Link, Link | None]:
        """Add a link; returns ``(new_link, replaced_link_or_None)``.

        Raises PortError, PortKindError, PortOccupiedError (unless ``replace``), CycleError or
        ShapeError (when the destination's shapes would stop working)."""
        self.check_link(src, src_port, dst, dst_port, replace=replace)
        old = self.link_into(dst, dst_port)
        if old is not None:
            self.links.remove(old)
        link = Link(src, src_port, dst, dst_port)
        self.links.append(link)
        self._touch()
        return link, old

    def add_link(self, link: Link) -> None:
        """Add a link that was valid before (undo, file loading after validation)."""
        self.links.append(link)
        self._touch()

    def disconnect(self, link: Link) -> None:
        if link not in self.links:
            raise GraphError("that link does not exist")
        self.links.remove(link)
        self._touch()

    # --- shapes ------------------------------------------------------------------------------

    def infer(self) -> ShapeReport:
        """Infer every port's shape and kind, without computing any numbers."""
        cached = self._cache.get("infer")
        if cached and cached[0] == self.revision:
            return cached[1]
        shapes: dict[tuple[str, str], Shape] = {}
        kinds: dict[tuple[str, str], Kind] = {}
        errors: dict[str, str] = {}
        incomplete: set[str] = set()
        wired: dict[str, list[str]] = {}
        for dst, port in self._links_by_dst():
            wired.setdefault(dst, []).append(port)
        for nid in self.topological_order():
            node = self.nodes[nid]
            if node.block is None:
                errors[nid] = f"unknown block type {node.type!r}: this file needs a newer Backprop Studio or a plugin"
                continue
            in_shapes: dict[str, Shape] = {}
            blocked = False
            for port in node.block.input_ports():
                link = self.link_into(nid, port.name)
                if link is None:
                    if not port.optional:
                        incomplete.add(nid)
                        blocked = True
                    continue
                key = (link.src, link.src_port)
                if key not in shapes:
                    blocked = True  # upstream failed or incomplete: say nothing more here
                    continue
                in_shapes[port.name] = shapes[key]
            names = {p.name for p in node.block.input_ports()}
            stale = [port for port in wired.get(nid, ()) if port not in names]
            if stale:
                errors[nid] = f"input '{stale[0]}' no longer exists; remove that link"
                blocked = True
            if blocked:
                continue
            try:
                out = node.block.infer_shapes(in_shapes)
                for local, (owner, wname) in node.block.shared_weights().items():
                    self._check_shared(node, owner, wname, node.block.shared_weight_shapes(in_shapes).get(local), shapes)
            except ShapeError as exc:
                errors[nid] = str(exc)
                continue
            for port, shape in out.items():
                shapes[(nid, port)] = tuple(int(s) for s in shape)
                kinds[(nid, port)] = node.block.output_kind(port)
        report = ShapeReport(shapes, kinds, errors, frozenset(incomplete))
        self._cache["infer"] = (self.revision, report)
        return report

    def _check_shared(self, node: Node, owner: str, wname: str, want: Shape | None = None,
                      shapes: Mapping[tuple[str, str], Shape] | None = None) -> None:
        if owner == node.id:
            raise ShapeError(f"shares weight '{wname}' with itself; name another node that owns a '{wname}'")
        problem = sharing_problem(self.nodes.get(owner), owner, wname)
        if problem is not None:
            raise ShapeError(f"shares weight '{wname}', but its tie {problem}")
        other = self.nodes[owner]
        if want is None:
            return
        # The owner's input shapes where already inferred (it need not come first in the order).
        known = shapes or {}
        owner_in = {}
        for port in other.block.input_ports():
            link = self.link_into(owner, port.name)
            if link is not None and (link.src, link.src_port) in known:
                owner_in[port.name] = known[(link.src, link.src_port)]
        try:
            have = other.block.weight_shapes(owner_in).get(wname)
        except (ShapeError, KeyError, IndexError):
            return  # the owner cannot size its weights yet; it reports its own problem
        want = tuple(want)
        if have is not None and tuple(have) != want:
            have = tuple(have)
            theirs = {w.name: w.shape for w in other.block.weights}.get(wname, "shape")
            ours = {w.name: w.shape for w in node.block.weights}.get(wname, "shape") if node.block else "shape"
            axis = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
            t_names, o_names = theirs.strip("()").split(", "), ours.strip("()").split(", ")
            detail = f"dimension {axis} differs"
            if axis < min(len(have), len(want), len(t_names), len(o_names)):
                detail += f": {t_names[axis]} {have[axis]} vs {o_names[axis]} {want[axis]}"
            raise ShapeError(
                f"{node.type}: shares weight '{wname}' with {other.label} ({other.type}), whose '{wname}' is "
                f"{theirs} = {have}, but {node.label} needs {ours} = {want} ({detail}); make the sizes agree"
            )

    # --- copying -----------------------------------------------------------------------------

    def copy(self) -> "Graph":
        """An independent copy with the same ids."""
        g = Graph()
        for n in self.nodes.values():
            g.nodes[n.id] = Node(n.id, n.type, dict(n.params), n.name, n.position, n.block, n.placeholder_ports)
        g.links = list(self.links)
        return g

    def weight_shapes(self, node_id: str, report: ShapeReport | None = None) -> dict[str, Shape]:
        """Shapes of a node's own weights (empty when its inputs are unknown)."""
        node = self.node(node_id)
        if node.block is None:
            return {}
        report = report or self.infer()
        in_shapes = self.input_shapes(node_id, report)
        if in_shapes is None or node_id in report.errors:
            return {}
        shared = node.block.shared_weights()
        return {k: v for k, v in node.block.weight_shapes(in_shapes).items() if k not in shared}

    def input_shapes(self, node_id: str, report: ShapeReport | None = None) -> dict[str, Shape] | None:
        """The shapes arriving at a node's inputs, or None when some required one is unknown."""
        node = self.node(node_id)
        report = report or self.infer()
        result: dict[str, Shape] = {}
        for port in node.input_ports():
            link = self.link_into(node_id, port.name)
            if link is None:
                if not port.optional:
                    return None
                continue
            key = (link.src, link.src_port)
            if key not in report.shapes:
                return None
            result[port.name] = report.shapes[key]
        return result

    def parameter_count(self) -> int:
        """How many learned numbers the graph holds (buffers such as running statistics excluded)."""
        cached = self._cache.get("parameters")
        if cached and cached[0] == self.revision:
            return cached[1]
        report = self.infer()
        total = 0
        for nid, node in self.nodes.items():
            shapes = self.weight_shapes(nid, report)
            if shapes:  # so the block exists and its input shapes are known
                buffers = node.block.buffer_names(self.input_shapes(nid, report) or {})  # type: ignore[union-attr]
                total += sum(math.prod(shape) for name, shape in shapes.items() if name not in buffers)
        self._cache["parameters"] = (self.revision, total)
        return total

"""The scene: mirrors a :class:`Document` through its signals and turns mouse gestures into
commands. It never writes the document itself (except moving nodes of a read-only view, which
is layout, not content): gestures become :mod:`editor.commands` pushed on the undo stack.
"""

from __future__ import annotations

import contextlib
import html
from typing import Any, Iterable, Iterator

import networkx as nx
import shiboken6
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QPainterPathStroker, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsSceneMouseEvent

from editor import commands
from editor.document import Document
from editor.items import DragWire, LinkItem, NodeItem, PortItem, Toast, placement
from editor.items.link import WireLabel, wire_path
from editor.layout import FRAME, Arrangement, arrange, find_buses, spread_factor
from editor.theme import LIGHT, Theme
from engine.blocks import Kind
from engine.blocks._base import shape_str
from engine.errors import EngineError
from engine.graph import Link, short

SCENE_EXTENT = 100_000.0
MIN_STACK = 3  # identical blocks in a chain drawn as one compact stack from this many on
MAX_RETIRED = 20_000  # removed cards (and wires) kept for an undo that brings them back
NUDGE, NUDGE_BIG = 8.0, 40.0  # arrow keys move the selection this far (scene units), Shift: further


class _Wiring:
    """State of one wire drag."""

    def __init__(self, anchor: PortItem, wire: DragWire, picked: Link | None) -> None:
        self.anchor = anchor  # the fixed end
        self.wire = wire
        self.picked = picked  # an existing link lifted off its input, or None
        self.forward = anchor.is_output  # True: looking for an input
        self.checked: dict[tuple[str, str], str] = {}  # full check results: "" ok, else message
        self.hover: PortItem | None = None


class _Picture:
    """The picture (cards, wires, routes, texts) just before a removal of many items, kept so
    that the undo bringing exactly those items back need not arrange anything: the picture it
    makes is this one, which was arranged.

    It holds while nothing else changes: ``epoch`` is the scene's arrange epoch it belongs to
    (every change that asks for an arrangement moves the epoch on), and an arrangement of what
    the removal left must change nothing that is drawn (else the items left were placed for the
    smaller picture). ``phase``: "removing" (inside the removal's batch), "removed", "restoring"
    (inside the batch that brings items back)."""

    def __init__(self, nodes: tuple[str, ...], links: tuple[Link, ...], grid: placement.Grid | None,
                 bounds: QRectF) -> None:
        self.nodes = nodes  # the scene's cards and wires before the removal, in its order
        self.links = links
        self.grid, self.bounds = grid, bounds  # the cards' grid then (None: not built)
        self.phase = "removing"
        self.epoch = -1


class GraphScene(QGraphicsScene):
    """A QGraphicsScene projecting one document. ``undo_stack`` is None for read-only views."""

    node_activated = Signal(str)  # double-click on a node
    canvas_activated = Signal(QPointF)  # double-click on empty canvas (scene position)
    # A new wire released on empty canvas: (node id, port, is_output, scene position); the window
    # offers the block search and connects what the user picks.
    wire_dropped = Signal(str, str, bool, QPointF)
    message = Signal(str)  # something worth a status-bar line
    reframe_requested = Signal()  # the layout changed a lot (a stack opened): frame it again

    def __init__(self, doc: Document, undo_stack: QUndoStack | None, theme: Theme = LIGHT,
                 *, compact_stacks: bool = False, parent: Any = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.undo_stack = undo_stack
        self.theme = theme
        self.compact_stacks = compact_stacks
        # Scene units per document unit, fixed when a graph is loaded (see layout.spread_factor).
        self.spread: tuple[float, float] = (1.0, 1.0)
        self.setSceneRect(-SCENE_EXTENT, -SCENE_EXTENT, 2 * SCENE_EXTENT, 2 * SCENE_EXTENT)
        # The index is rebuilt as nodes move; for a few hundred items no index is faster.
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self.nodes: dict[str, NodeItem] = {}
        self.links: dict[Link, LinkItem] = {}
        # Items of removed nodes and links, for the undo that brings them back.
        self._retired_nodes: dict[str, NodeItem] = {}
        self._retired_links: dict[Link, LinkItem] = {}
        self._links_of: dict[str, set[Link]] = {}
        self.stacks: dict[str, list[str]] = {}  # head id -> member ids (head first)
        self._stack_of: dict[str, str] = {}  # member id -> head id
        self._opened_stacks: set[str] = set()
        self._wiring: _Wiring | None = None
        self._press_positions: dict[str, QPointF] = {}
        self._dragged: dict[str, QPointF] = {}  # where a drag has taken each card so far
        self._grid: placement.Grid | None = None
        self._grid_bounds = QRectF()  # the visible cards' bounds, when the grid is built
        # The view's size (pixels), told by the view; layouts fit it.
        self.view_size: tuple[float, float] | None = None
        # Lay the graph out for the view when it is framed: read-only views always; a lesson just
        # opened when its own layout cannot be read whole (the window clears it on the first edit).
        self.adapt_layout = self.read_only
        self._adapted = False
        self._reroute = False
        self._arranging = False
        self._taken: list[placement.Lane] = []
        # Every change that asks for an arrangement moves the epoch on; ``_arranged_epoch`` is the
        # epoch the last arrangement left (equal: the picture is arranged for what it shows).
        self._epoch = 0
        self._arranged_epoch = -1
        self._before_removal: _Picture | None = None
        self._unplugged: set[tuple[str, str]] = set()  # inputs whose wire went in this batch
        # How many wires were routed from scratch, and how many arrange passes ran (the costs an
        # edit of a big graph must keep small; tests count them).
        self.routes_planned = 0
        self.arrangements = 0
        self._arrange_timer = QTimer(self)
        self._arrange_timer.setSingleShot(True)
        self._arrange_timer.setInterval(0)
        self._arrange_timer.timeout.connect(self.arrange)
        self.toast = Toast(self)
        self.addItem(self.toast)
        doc.node_added.connect(self._on_node_added)
        doc.node_removed.connect(self._on_node_removed)
        doc.link_added.connect(self._on_link_added)
        doc.link_removed.connect(self._on_link_removed)
        doc.params_changed.connect(self._on_node_changed)
        doc.node_renamed.connect(self._on_node_changed)
        doc.node_moved.connect(self._on_node_moved)
        doc.shapes_changed.connect(self.refresh_shapes)
        doc.graph_reset.connect(self.rebuild)
        # Deleting a thousand selected nodes must not tell the panels a thousand times.
        doc.batch_started.connect(self._begin_selection_batch)
        doc.batch_finished.connect(self._on_batch_finished)
        self._selected: frozenset[QGraphicsItem] = frozenset()  # as the items last showed it
        self.selectionChanged.connect(self._show_selection)
        self._selection_depth = 0
        self._selection_before: frozenset[QGraphicsItem] = frozenset()
        self._signals_were_blocked = False
        self.rebuild()

    @property
    def read_only(self) -> bool:
        return self.undo_stack is None or self.doc.read_only

    # --- mirroring -------------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Drop every item and build them again from the document."""
        self.cancel_wiring()
        self._adapted = False
        self._before_removal = None
        with self.selection_batch():
            for item in self.nodes.values():
                self.removeItem(item)
            for item in self.links.values():
                item.remove_from(self)
        self.nodes.clear()
        self.links.clear()
        self._links_of.clear()
        self._retired_nodes.clear()
        self._retired_links.clear()
        g = self.doc.graph
        for nid in g.nodes:
            self._add_node_item(nid, place=False)
        self.spread = (1.0, 1.0)
        if not self.read_only:
            self.spread = spread_factor([(*g.nodes[nid].position, item.width, item.height)
                                         for nid, item in self.nodes.items()])
        for nid, item in self.nodes.items():
            item.setPos(self.to_scene(g.nodes[nid].position))
        for link in g.links:
            self._add_link_item(link)
        self._compute_stacks()
        self.refresh_shapes()
        self.arrange(reroute=True)

    def to_scene(self, position: tuple[float, float]) -> QPointF:
        return QPointF(position[0] * self.spread[0], position[1] * self.spread[1])

    def to_doc(self, point: QPointF) -> tuple[float, float]:
        return (round(point.x() / self.spread[0], 2), round(point.y() / self.spread[1], 2))

    def _add_node_item(self, node_id: str, place: bool = True) -> NodeItem:
        node = self.doc.node(node_id)
        item = self._retired_nodes.pop(node_id, None)
        if item is None or item.node is not node:
            item = NodeItem(node)
        else:
            # An undone delete: the same node comes back, so does its card (built in ms, not s),
            # selected if it was when it went.
            item.hover = False
        if place:
            self._move_item(item, self.to_scene(node.position))
        if self.read_only:
            item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, self.doc.read_only)
        self.nodes[node_id] = item
        self._links_of.setdefault(node_id, set())
        self.addItem(item)
        return item

    def _add_link_item(self, link: Link) -> LinkItem:
        item = self._retired_links.pop(link, None)
        reused = item is not None
        back = self._coming_back(reused and item.isVisible())
        if item is None:
            item = LinkItem(link)
        else:
            if not item.isVisible():
                item.setVisible(True)
            item.hover = False
        self.links[link] = item
        self._links_of.setdefault(link.src, set()).add(link)
        self._links_of.setdefault(link.dst, set()).add(link)
        item.add_to(self)
        if back:
            pass  # with its path and texts, as it was in the picture it comes back to
        elif reused and self.doc.in_batch:
            self.schedule_arrange(reroute=True)  # it comes back with its path; the batch's arrange checks it
        else:
            self._update_link_path(item)
        self._set_port_connected(link, True)
        return item

    def _on_node_added(self, node_id: str) -> None:
        retired = self._retired_nodes.get(node_id)
        back = self._coming_back(retired is not None and retired.node is self.doc.node(node_id))
        self._add_node_item(node_id)
        if back:
            self._grid = None  # the picture it comes back to was arranged with it
        else:
            self.invalidate_cards()

    def _on_node_removed(self, node_id: str) -> None:
        self._removing()
        item = self.nodes.pop(node_id, None)
        self._links_of.pop(node_id, None)
        if item is not None:
            self.removeItem(item)
            self._retire(self._retired_nodes, node_id, item)
        self.invalidate_cards()

    def _on_link_added(self, link: Link) -> None:
        self._add_link_item(link)

    def _on_link_removed(self, link: Link) -> None:
        self._removing()
        item = self.links.pop(link, None)
        for nid in (link.src, link.dst):
            self._links_of.get(nid, set()).discard(link)
        if item is not None:
            item.remove_from(self)
            self._retire(self._retired_links, link, item)
        self._set_port_connected(link, False)

    # --- an undone removal brings its picture back -------------------------------------------------

    def _removing(self) -> None:
        """An item is about to go. The first of a batch keeps the picture as it is, when it is
        arranged (the undo bringing the same items back may show it again as it was)."""
        point = self._before_removal
        if point is not None and point.phase == "removing":
            return
        self._forget_removal()
        if self.doc.in_batch and not self.read_only and self._epoch == self._arranged_epoch:
            self._before_removal = _Picture(tuple(self.nodes), tuple(self.links), self._grid, self._grid_bounds)

    def _coming_back(self, as_it_went: bool) -> bool:
        """An item is about to be added: True when it is one that went in the last removal, as
        it went, with nothing else changed since (see :class:`_Picture`)."""
        point = self._before_removal
        if point is None:
            return False
        if point.phase == "removed" and as_it_went and self.doc.in_batch and self._epoch == point.epoch:
            point.phase = "restoring"
        if point.phase == "restoring" and as_it_went:
            return True
        self._forget_removal()
        return False

    def _picture_changed(self) -> None:
        """An arrangement moved a wire, a text or a caption: the picture before the last removal
        is not what an undo would bring back any more."""
        if self._before_removal is not None and self._before_removal.phase != "removing":
            self._forget_removal()

    def _forget_removal(self) -> None:
        point, self._before_removal = self._before_removal, None
        if point is not None and point.phase == "restoring":
            self.invalidate_cards()  # what came back so far skipped it: arrange everything

    def _on_batch_finished(self) -> None:
        self._unplug_ports()
        point = self._before_removal
        if point is not None and point.phase == "removing":
            point.phase, point.epoch = "removed", self._epoch
        elif point is not None and point.phase == "restoring":
            self._before_removal = None
            if self._epoch == point.epoch and self._in_order_of(point):
                # Exactly the cards and wires of the picture before the removal are back, where
                # they were, and nothing else changed: that picture was arranged. (What the
                # removal scheduled is for the smaller picture, gone now.)
                self._arrange_timer.stop()
                self._reroute = False
                self._arranged_epoch = self._epoch
                self._grid, self._grid_bounds = point.grid, point.bounds
            else:
                self.invalidate_cards()
        self._end_selection_batch()

    def _in_order_of(self, point: _Picture) -> bool:
        """True when the scene holds exactly the cards and wires of ``point``; then they are
        put in its order (what came back went to the end), which routing and placing follow."""
        for mine, then in ((self.nodes, point.nodes), (self.links, point.links)):
            if len(mine) != len(then):
                return False
            if tuple(mine) == then:
                continue
            if not all(key in mine for key in then):
                return False
            ordered = [(key, mine[key]) for key in then]
            mine.clear()
            mine.update(ordered)
        return True

    def _retire(self, shelf: dict, key: Any, item: QGraphicsItem) -> None:
        """Keep a removed item for an undo that brings it back (bounded: an undo stack of huge
        deletes must not keep every card alive)."""
        if self.read_only:
            return
        if len(shelf) >= MAX_RETIRED:
            shelf.clear()
        shelf[key] = item

    def _set_port_connected(self, link: Link, connected: bool) -> None:
        key = (link.dst, link.dst_port)
        if not connected and self.doc.in_batch:
            # at the batch's end, if its card is still there (a delete takes the cards with
            # their wires: their ports stay as they are, for the undo)
            self._unplugged.add(key)
            return
        self._unplugged.discard(key)
        self._show_plugged(key, connected)

    def _unplug_ports(self) -> None:
        unplugged, self._unplugged = self._unplugged, set()
        for key in unplugged:
            self._show_plugged(key, False)

    def _show_plugged(self, key: tuple[str, str], connected: bool) -> None:
        """The input port ``(node, port)`` drawn as having a wire or not (when its card is here)."""
        node = self.nodes.get(key[0])
        port = node.inputs.get(key[1]) if node is not None else None
        if port is not None and port.connected != connected:
            port.connected = connected
            port.update()

    def _on_node_changed(self, node_id: str) -> None:
        self._refresh_item(node_id)

    def _refresh_item(self, node_id: str) -> None:
        """Re-read a node (its ports are rebuilt) and re-attach its wires."""
        item = self.nodes.get(node_id)
        if item is None:
            return
        chain = self.stacks.get(node_id)
        item.title_override = f"{short(self.doc.node(chain[0]).name)} … {short(self.doc.node(chain[-1]).name)}" if chain else ""
        item.refresh(self.doc.node(node_id))
        self.invalidate_cards()
        for link in self._links_of.get(node_id, ()):
            self._update_link_path(self.links[link])
            if link.dst == node_id:
                self._set_port_connected(link, True)

    def _on_node_moved(self, node_id: str) -> None:
        item = self.nodes.get(node_id)
        if item is not None:
            target = self.to_scene(self.doc.node(node_id).position)
            if self.to_doc(item.pos()) != self.to_doc(target):
                self._move_item(item, target)

    def _move_item(self, item: NodeItem, to: QPointF) -> None:
        if item.pos() != to:
            item.setPos(to)
            self.node_item_moved(item)

    def _follow_drag(self) -> None:
        """Qt moved the dragged cards: their wires follow."""
        for nid in self._press_positions:
            item = self.nodes.get(nid)
            if item is not None and self._dragged.get(nid) != item.pos():
                self._dragged[nid] = item.pos()
                self.node_item_moved(item)

    def node_item_moved(self, item: NodeItem) -> None:
        """A card moved: its wires follow (and, once the move is over, every wire is routed
        again: the card may now stand in another wire's way)."""
        self._grid = None
        if not self._press_positions:
            self.schedule_arrange(reroute=True)
        for link in self._links_of.get(item.node_id, ()):
            link_item = self.links.get(link)
            if link_item is not None:
                self._update_link_path(link_item)
        if self._stack_of.get(item.node_id) == item.node_id:
            # A stack head carries its hidden members along so opening it starts from there.
            for member in self.stacks[item.node_id][1:]:
                m = self.nodes.get(member)
                if m is not None:
                    self._move_item(m, item.pos())

    def _update_link_path(self, item: LinkItem) -> None:
        link = item.link
        src = self._visible(link.src)
        dst = self._visible(link.dst)
        if src is None or dst is None:
            return
        if src is dst and self._stack_of.get(link.src) and self._stack_of.get(link.src) == self._stack_of.get(link.dst):
            return  # inside a compact stack: hidden
        # Each end's point and direction; a bus end sits straight under or over the other end.
        p1, d1 = src.anchor(link.src_port, True, dst.port_scene_pos(link.dst_port, False))
        p2, d2 = dst.anchor(link.dst_port, False, p1)
        if not self._arranging and item.ends == (p1, d1, p2, d2):
            pass  # its ends did not move: it keeps its route until the next arrange says otherwise
        elif self._arranging and not (d1.y() or d2.y()):
            # Routing looks at every card, so it runs once per change (in arrange), not per wire
            # moved: until then (and while a card is dragged) a wire is its plain curve. A wire
            # whose ends, cards nearby and lanes taken nearby are as they were keeps its route.
            grid = self.card_grid()
            key = (p1.x(), p1.y(), p2.x(), p2.y(), id(src), id(dst))
            memo = item.route_memo
            if memo is None or memo[0] != key or not placement.still_valid(memo[1], grid, self._taken):
                memo = (key, placement.plan_route(p1, p2, grid, (src, dst), wire_path(p1, p2), self._taken))
                item.route_memo = memo
                self.routes_planned += 1
            self._taken.extend(memo[1].lanes)
            if item.set_ends(p1, p2, d1, d2, memo[1].via):
                self._picture_changed()
        elif item.set_ends(p1, p2, d1, d2, None):
            self._picture_changed()
        item.bus_ends = (bool(d1.y()), bool(d2.y()))
        if not self._arranging:
            if self._press_positions:
                item.follow_labels()  # dragging: the texts ride along, placed properly on release
            else:
                self.schedule_arrange(reroute=True)

    # --- wire routes and wire texts ------------------------------------------------------------------

    def card_grid(self) -> placement.Grid:
        """Every visible card's rectangle, for routing wires and placing their texts (cached until
        a card moves, appears, hides or changes size)."""
        if self._grid is None:
            self._grid = grid = placement.Grid()
            bounds = QRectF()
            for item in self.nodes.values():
                if item.isVisible():
                    rect = item.card_rect()
                    grid.add(rect, item)
                    bounds = bounds.united(rect)
            self._grid_bounds = bounds
            marks = self._run_marks()
            # what a pass draws around the cards (strips, chips, badges: see editor.run.overlay)
            # is in the way of wires and texts as the cards are
            for mark in marks:
                mark.follow_card()
                for rect in mark.obstacles():
                    grid.add(mark.mapRectToScene(rect), mark)
            for mark in marks:  # a Σ chip in its longest form that covers nothing, or none
                fit = []
                for forms in mark.fanout_options():
                    k = next((k for k, (r, _t) in enumerate(forms)
                              if not grid.hits(mark.mapRectToScene(r).adjusted(-2, -2, 2, 2), ignore=(mark,))), len(forms))
                    if k < len(forms):
                        grid.add(mark.mapRectToScene(forms[k][0]), mark)
                    fit.append(k)
                if tuple(fit) != mark.fanout_fit:
                    mark.fanout_fit = tuple(fit)
                    mark.update()
                    self._picture_changed()
        return self._grid

    def invalidate_cards(self) -> None:
        """Cards appeared, disappeared or changed size: route and place everything again soon."""
        self._grid = None
        self.schedule_arrange(reroute=True)

    def schedule_arrange(self, reroute: bool = False) -> None:
        """Place the wire texts again soon (many changes in one event-loop turn cost one pass);
        with ``reroute``, route every wire again first."""
        self._reroute = self._reroute or reroute
        self._epoch += 1
        if not self._arrange_timer.isActive():
            self._arrange_timer.start()

    def arrange(self, reroute: bool = False) -> None:
        """Route the wires (when asked or pending) and place every wire text, now."""
        self._arrange_timer.stop()
        reroute, self._reroute = reroute or self._reroute, False
        self.arrangements += 1
        self._arranging = True
        epoch = self._epoch
        try:
            if reroute:
                self._grid = None
                self._taken = []  # lanes taken so far: each wire sees those routed before it
                for item in self.links.values():
                    if item.isVisible():
                        self._update_link_path(item)
            labels = [label for item in self.links.values() for label in item.labels.values()]
            grid = self.card_grid()
            if placement.place_labels(labels, grid, fixed=self._place_captions(grid)):
                self._picture_changed()
        finally:
            self._arranging = False
        if self._epoch == epoch:  # (else something it did asked for another one)
            self._arranged_epoch = epoch

    def _run_marks(self) -> list[Any]:
        """What a pass draws on the visible cards (editor.run.overlay.RunMark, a child of its card)."""
        return [m for item in self.nodes.values() if item.isVisible() for m in item.childItems() if hasattr(m, "obstacles")]

    def _place_captions(self, grid: placement.Grid) -> list[tuple[QRectF, Any]]:
        """Write each run mark's caption (a strip's or a sparkline's, under its card) where it
        covers no card, strip, chip or badge, no other caption and no wire; else its mark's
        tooltip has it. Returns the captions written: the wire texts keep off them."""
        written: list[tuple[QRectF, Any]] = []
        for mark in self._run_marks():
            local = mark.caption_rect() if mark.scene() is self else None
            rect = None if local is None else mark.mapRectToScene(local)
            shown = rect is not None and not grid.hits(rect.adjusted(-2, -2, 2, 2), ignore=(mark,)) \
                and not any(rect.intersects(r) for r, _m in written) and not self._wire_crosses(rect)
            if shown:
                written.append((rect, mark))
            if shown != mark.caption_shown:
                mark.caption_shown = shown
                mark.update()
                self._picture_changed()
        return written

    def _wire_crosses(self, rect: QRectF) -> bool:
        grown = rect.adjusted(-2, -2, 2, 2)
        stroker = QPainterPathStroker()
        stroker.setWidth(3.0)
        for item in self.links.values():
            if item.isVisible() and not item.path.isEmpty() and item.path.boundingRect().adjusted(-2, -2, 2, 2).intersects(grown):
                if stroker.createStroke(item.path).intersects(grown):
                    return True
        return False

    def _visible(self, node_id: str) -> NodeItem | None:
        head = self._stack_of.get(node_id)
        return self.nodes.get(head if head is not None else node_id)

    def refresh_shapes(self) -> None:
        """Re-read the shape report: wire labels, error badges, incomplete inputs."""
        report = self.doc.report()
        g = self.doc.graph
        # A card or wire that already shows this very report is left as it is: what it shows
        # depends on nothing else (an undone delete brings back the report its items showed).
        for nid, item in self.nodes.items():
            if item.shown_report is report:
                continue
            item.shown_report = report
            item.set_status(report.errors.get(nid, ""), nid in report.incomplete)
            for name, port in item.outputs.items():
                shape = report.shapes.get((nid, name))
                port.set_tip(f"output <b>{name}</b> ({port.kind.value})" + (f"<br>shape {shape_str(shape)}" if shape is not None else ""))
            for name, port in item.inputs.items():
                link = g.link_into(nid, name)
                shape = report.shapes.get((link.src, link.src_port)) if link is not None else None
                state = shape_str(shape) if shape is not None else ("not connected" if link is None else "unknown")
                optional = ", optional" if port.optional else ""
                port.set_tip(f"input <b>{name}</b> ({port.kind.value}{optional})<br>{state}")
        for link, item in self.links.items():
            if item.shown_report is report:
                continue
            item.shown_report = report
            shape = report.shapes.get((link.src, link.src_port))
            kind = report.kinds.get((link.src, link.src_port), Kind.FLOAT)
            item.set_shape_label(shape_str(shape) if shape is not None else "", kind, shape is not None)

    # --- compact stacks of identical blocks --------------------------------------------------------

    def _compute_stacks(self) -> None:
        for head in list(self.stacks):
            if head in self.nodes:
                self.nodes[head].stack_count = 1
                self.stacks.pop(head)
                self._refresh_item(head)
        for member in self._stack_of:
            if member in self.nodes:
                self.nodes[member].setVisible(True)
        self.stacks, self._stack_of = {}, {}
        self.invalidate_cards()
        if not self.compact_stacks:
            return
        g = self.doc.graph
        outs: dict[str, list[Link]] = {n: [] for n in g.nodes}
        ins: dict[str, list[Link]] = {n: [] for n in g.nodes}
        for link in g.links:
            outs[link.src].append(link)
            ins[link.dst].append(link)

        def same(a: str, b: str) -> bool:
            na, nb = g.nodes[a], g.nodes[b]
            return na.type == nb.type and na.params == nb.params and not na.is_placeholder

        def next_of(a: str) -> str | None:
            targets = {l.dst for l in outs[a]}
            if len(targets) != 1:
                return None
            b = targets.pop()
            if not same(a, b) or {l.src for l in ins[b]} != {a}:
                return None
            return b

        def prev_of(b: str) -> str | None:
            sources = {l.src for l in ins[b]}
            if len(sources) != 1:
                return None
            a = next(iter(sources))
            return a if next_of(a) == b else None

        seen: set[str] = set()
        for nid in g.topological_order():
            if nid in seen or prev_of(nid) is not None:
                continue
            chain = [nid]
            while (nxt := next_of(chain[-1])) is not None and nxt not in seen:
                chain.append(nxt)
            seen.update(chain)
            if len(chain) >= MIN_STACK and nid not in self._opened_stacks:
                self.stacks[nid] = chain
                for m in chain:
                    self._stack_of[m] = nid
        for head, chain in self.stacks.items():
            self.nodes[head].stack_count = len(chain)
            self._refresh_item(head)
            for m in chain[1:]:
                self.nodes[m].setVisible(False)
                self._move_item(self.nodes[m], self.nodes[head].pos())
        for link, item in self.links.items():
            hidden = self._stack_of.get(link.src) is not None and \
                self._stack_of.get(link.src) == self._stack_of.get(link.dst)
            item.setVisible(not hidden)
            self._update_link_path(item)
        if self.stacks:
            # The head's output stands for the last member's output.
            for head, chain in self.stacks.items():
                last = self.doc.node(chain[-1])
                self.nodes[head].setToolTip(
                    f"<b>{len(chain)} × {last.type}</b><br>{html.escape(short(self.doc.node(chain[0]).name))} … {html.escape(short(last.name))}"
                    "<br><i>double-click to show every block</i>")

    def open_stack(self, head: str) -> None:
        """Show every member of a compact stack (and lay them all out again)."""
        chain = self.stacks.get(head)
        if not chain:
            return
        self._opened_stacks.add(head)
        self._compute_stacks()
        self.auto_layout_view()
        self.reframe_requested.emit()

    def arrangement(self, viewport: tuple[float, float] | None = None, readable: float = 0.9) -> Arrangement:
        """The auto-layout of what is visible, fitted to ``viewport`` (pixels) when given. In a
        read-only view, nodes wired along a whole row become buses (set on their items here)."""
        visible = [n for n in self.doc.graph.nodes if self._stack_of.get(n, n) == n]
        buses = find_buses(self.doc.graph, visible, self._stack_of) if self.read_only else {}
        for nid, item in self.nodes.items():
            if item.bus != buses.get(nid, ""):
                item.set_bus(buses.get(nid, ""))
        result = arrange(self.doc.graph, self.node_size, nodes=visible, alias=self._stack_of, scale=self.spread,
                         viewport=viewport, readable=readable, buses=buses, label_width=self._label_width,
                         port_offset=self._port_offset)
        for nid, (side, width) in result.buses.items():
            self.nodes[nid].set_bus(side, width)
        return result

    def adapt_to_view(self, comfortable: float, legible: float) -> None:
        """Called by the view before it frames the graph (see ``adapt_layout``): lay out for a
        ``comfortable`` zoom; a lesson keeps its own layout when that is ``legible`` whole."""
        if not self.adapt_layout or self.view_size is None:
            return
        if self.read_only or self._adapted:
            self.auto_layout_view(self.view_size, comfortable)
            return
        rect = self.items_bounding_rect()
        if rect.isEmpty():
            return
        w, h = self.view_size
        now = min(w / (rect.width() + 2 * FRAME), h / (rect.height() + 2 * FRAME), 1.0)
        if now >= legible:
            return
        readable = comfortable
        result = self.arrangement(self.view_size, readable)
        if result.zoom > now + 0.05:
            self.auto_layout_view(self.view_size, readable, result)
            self._adapted = True  # from now on (until an edit) the layout is ours to redo

    def auto_layout_view(self, viewport: tuple[float, float] | None = None, readable: float = 0.9,
                         result: Arrangement | None = None) -> None:
        """Lay out directly, not as an edit: a read-only view, or a lesson just opened."""
        if viewport is None:
            viewport = self.view_size
        positions = (result or self.arrangement(viewport, readable)).positions
        for nid, pos in positions.items():
            self.doc.move(nid, pos)
        for head, chain in self.stacks.items():
            for m in chain[1:]:
                self.doc.move(m, positions.get(head, (0.0, 0.0)))
        self.invalidate_cards()

    def layout_hints(self) -> dict[str, Any]:
        """What an editable graph's Auto-Layout needs from this scene: the view's size (to fold to
        it), the widths of the wire texts, the ports' heights."""
        from editor.items.fonts import comfortable_zoom
        return {"viewport": self.view_size, "readable": comfortable_zoom(),
                "label_width": self._label_width, "port_offset": self._port_offset}

    def _label_width(self, a: str, b: str) -> float:
        """The width of the shape written on the wire from ``a`` to ``b`` (0 when none)."""
        widest = 0.0
        for link in self._links_of.get(a, ()):
            if self._stack_of.get(link.dst, link.dst) == b and link in self.links:
                text = self.links[link].label
                if text:
                    widest = max(widest, WireLabel.size_of(text)[0])
        return min(widest, 110.0)

    def _port_offset(self, node_id: str, port: str, is_output: bool) -> float:
        item = self.nodes[node_id]
        ports = item.outputs if is_output else item.inputs
        return ports[port].y() if port in ports else item.height / 2

    def node_size(self, node_id: str) -> tuple[float, float]:
        item = self.nodes.get(node_id)
        if item is None:
            return (180.0, 90.0)
        extra = 8.0 if item.stack_count > 1 else 0.0
        return (item.width + extra, item.height + extra)

    # --- queries for the window ----------------------------------------------------------------------

    def selected_node_ids(self) -> list[str]:
        ids: list[str] = []
        for item in self.selectedItems():
            if isinstance(item, NodeItem):
                ids.extend(self.stacks.get(item.node_id, [item.node_id]))
        order = {nid: i for i, nid in enumerate(self.doc.graph.nodes)}
        return sorted(set(ids), key=lambda n: order.get(n, 0))

    def selected_links(self) -> list[Link]:
        return [item.link for item in self.selectedItems() if isinstance(item, LinkItem)]

    def select_nodes(self, ids: Iterable[str]) -> None:
        ids = set(ids)
        with self.selection_batch():
            self.clearSelection()
            for nid in ids:
                item = self._visible(nid)
                if item is not None:
                    item.setSelected(True)

    def select_all(self) -> None:
        """Select every visible node (one selection change, however many nodes)."""
        with self.selection_batch():
            for item in self.nodes.values():
                if item.isVisible():
                    item.setSelected(True)

    @contextlib.contextmanager
    def selection_batch(self) -> Iterator[None]:
        """Select, deselect or remove many items with ``selectionChanged`` emitted once at the
        end (when the selection changed), not once per item: every listener reads the whole
        selection, so per-item signals made selecting or deleting N nodes cost N²."""
        self._begin_selection_batch()
        try:
            yield
        finally:
            self._end_selection_batch()

    def _begin_selection_batch(self) -> None:
        self._selection_depth += 1
        if self._selection_depth == 1:
            self._selection_before = frozenset(self.selectedItems())
            # NOTE: the scene's other signals are queued by Qt (changed) or not sent during an
            # edit, so blocking them all for its length loses nothing.
            self._signals_were_blocked = self.blockSignals(True)

    def _end_selection_batch(self) -> None:
        if self._selection_depth == 0:
            return
        self._selection_depth -= 1
        if self._selection_depth:
            return
        self.blockSignals(self._signals_were_blocked)
        before, self._selection_before = self._selection_before, frozenset()
        if frozenset(self.selectedItems()) != before and not self._signals_were_blocked:
            self.selectionChanged.emit()

    def _show_selection(self) -> None:
        """Tell the items whose selection changed (a card raises its error note, a wire frames
        its texts in the selection colour)."""
        now = frozenset(self.selectedItems())
        for item in now.symmetric_difference(self._selected):
            if isinstance(item, (NodeItem, LinkItem)) and shiboken6.isValid(item):
                item.selection_shown()
        self._selected = now

    def items_bounding_rect(self) -> QRectF:
        """The visible cards' rectangle (see :meth:`NodeItem.card_rect`)."""
        if self._grid is not None:
            return QRectF(self._grid_bounds)  # worked out with the grid
        rect = QRectF()
        for item in self.nodes.values():
            if item.isVisible():
                rect = rect.united(item.card_rect())
        return rect

    def source_cards(self) -> list[QRectF]:
        """The cards where the data flow starts: visible nodes that no wire enters."""
        fed = {self._stack_of.get(link.dst, link.dst) for link in self.doc.graph.links}
        return [item.card_rect() for nid, item in self.nodes.items() if item.isVisible() and nid not in fed]

    # --- commands --------------------------------------------------------------------------------------

    def push(self, command: QUndoCommand) -> bool:
        if self.read_only:
            self.message.emit("This is the inside of a composite block: it is read-only. Use Expand to edit it.")
            return False
        self.undo_stack.push(command)
        return True

    def show_message(self, text: str, at: QPointF, *, error: bool = True, msec: int = 4000) -> None:
        self.toast.show_message(text, at, error=error, msec=msec)
        self.message.emit(text)

    # --- wiring and moving -----------------------------------------------------------------------------

    def _port_at(self, pos: QPointF) -> PortItem | None:
        for item in self.items(pos):
            if isinstance(item, PortItem) and item.isVisible() and item.parentItem().isVisible():
                return item
        return None

    def link_at(self, pos: QPointF) -> Link | None:
        for item in self.items(pos):
            if isinstance(item, LinkItem) and item.isVisible():
                return item.link
        return None

    def _node_at(self, pos: QPointF) -> NodeItem | None:
        for item in self.items(pos):
            if isinstance(item, NodeItem) and item.isVisible():
                return item
            if isinstance(item, PortItem):
                return item.node_item()
        return None

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not self.read_only:
            port = self._port_at(event.scenePos())
            if port is not None:
                self._start_wiring(port, event.scenePos())
                event.accept()
                return
        super().mousePressEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self._press_positions = {item.node_id: item.pos() for item in self.selectedItems()
                                     if isinstance(item, NodeItem)}
            self._dragged = dict(self._press_positions)

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._wiring is not None:
            self._drag_wiring(event.scenePos())
            event.accept()
            return
        super().mouseMoveEvent(event)
        if self._press_positions:
            self._follow_drag()

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._wiring is not None and event.button() == Qt.MouseButton.LeftButton:
            self._finish_wiring(event.scenePos())
            event.accept()
            return
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton and self._press_positions:
            self._commit_move()

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mouseDoubleClickEvent(event)
        node = self._node_at(event.scenePos())
        if node is not None:
            if node.stack_count > 1:
                self.open_stack(node.node_id)
            else:
                self.node_activated.emit(node.node_id)
        else:
            self.canvas_activated.emit(event.scenePos())
        event.accept()

    def _commit_move(self) -> None:
        moves = {}
        for nid, before in self._press_positions.items():
            item = self.nodes.get(nid)
            if item is None or nid not in self.doc.graph.nodes:
                continue
            if item.pos() != before:
                moves[nid] = (self.doc.node(nid).position, self.to_doc(item.pos()))
        self._press_positions = {}
        self.schedule_arrange(reroute=True)
        if not moves:
            return
        if self.read_only:
            for nid, (_, new) in moves.items():
                self.doc.move(nid, new)
            return
        self.push(commands.MoveNodesCommand(self.doc, moves))

    def _start_wiring(self, port: PortItem, pos: QPointF) -> None:
        picked = None
        anchor = port
        if not port.is_output:
            picked = self.doc.graph.link_into(port.node_id, port.name)
            if picked is not None:
                # Lift the existing wire off this input: the fixed end is its source.
                src_item = self._visible(picked.src)
                anchor = src_item.outputs.get(picked.src_port, port) if src_item else port
                self.links[picked].setVisible(False)
        wire = DragWire(anchor.kind)
        self.addItem(wire)
        self._wiring = _Wiring(anchor, wire, picked)
        self._mark_candidates()
        self._drag_wiring(pos)

    def _mark_candidates(self) -> None:
        """Cheap checks for every port (kind, direction, cycle) so compatible ports light up;
        the full check (shapes) runs only for the port under the cursor."""
        w = self._wiring
        g = self.doc.graph
        nxg = g.to_networkx()
        a = w.anchor
        if w.forward:
            blocked = nx.ancestors(nxg, a.node_id) | {a.node_id}
        else:
            blocked = nx.descendants(nxg, a.node_id) | {a.node_id}
        for nid, item in self.nodes.items():
            ports = item.inputs if w.forward else item.outputs
            for p in ports.values():
                ok = nid not in blocked and (p.kind.accepts(a.kind))
                p.compatible = ok
                p.update()
            for p in (item.outputs if w.forward else item.inputs).values():
                p.compatible = None
        a.compatible = None

    def _full_check(self, port: PortItem) -> str:
        w = self._wiring
        key = (port.node_id, port.name)
        if key not in w.checked:
            src, sp, dst, dp = self._link_args(port)
            try:
                self.doc.graph.check_link(src, sp, dst, dp, replace=True)
                w.checked[key] = ""
            except EngineError as exc:
                w.checked[key] = str(exc)
        return w.checked[key]

    def _link_args(self, port: PortItem) -> tuple[str, str, str, str]:
        a = self._wiring.anchor
        if self._wiring.forward:
            return a.node_id, a.name, port.node_id, port.name
        return port.node_id, port.name, a.node_id, a.name

    def _drag_wiring(self, pos: QPointF) -> None:
        w = self._wiring
        target = self._port_at(pos)
        if target is not None and (target.is_output == w.forward or target is w.anchor):
            target = None
        end = target.scenePos() if target is not None else pos
        start = w.anchor.scenePos()
        if w.forward:
            w.wire.set_ends(start, end)
        else:
            w.wire.set_ends(end, start)
        if target is not w.hover:
            w.hover = target
            if target is None:
                w.wire.ok = None
                self.toast.hide()
            else:
                message = self._full_check(target)
                w.wire.ok = not message
                if message:
                    self.toast.show_message(message, pos, msec=0)
                else:
                    self.toast.hide()
            w.wire.update()
        elif target is not None and self.toast.isVisible():
            self.toast.setPos(pos)

    def _finish_wiring(self, pos: QPointF) -> None:
        w = self._wiring
        target = w.hover
        picked = w.picked
        args = self._link_args(target) if target is not None else None
        anchor = w.anchor
        self.cancel_wiring()
        if args is None:
            if picked is not None:
                self.push(commands.RemoveItemsCommand(self.doc, [], [picked]))
            elif self._node_at(pos) is None:
                self.wire_dropped.emit(anchor.node_id, anchor.name, anchor.is_output, pos)
            return
        src, sp, dst, dp = args
        if picked is not None and (src, sp, dst, dp) == (picked.src, picked.src_port, picked.dst, picked.dst_port):
            return  # put back where it was
        try:
            if picked is not None and (picked.dst, picked.dst_port) != (dst, dp):
                # Lifting a wire off one input and dropping it on another is one step:
                # children of a macro run in order (remove the lifted link, then connect).
                self.push(commands.MacroCommand(f"Move link to {short(self.doc.node(dst).name)}.{dp}", [
                    commands.RemoveItemsCommand(self.doc, [], [picked]),
                    commands.ConnectCommand(self.doc, src, sp, dst, dp)]))
            else:
                self.push(commands.ConnectCommand(self.doc, src, sp, dst, dp))
        except EngineError as exc:
            self.show_message(str(exc), pos)

    def cancel_wiring(self) -> None:
        w = self._wiring
        if w is None:
            return
        self._wiring = None
        self.removeItem(w.wire)
        if w.picked is not None and w.picked in self.links:
            self.links[w.picked].setVisible(True)
        for item in self.nodes.values():
            for p in list(item.inputs.values()) + list(item.outputs.values()):
                if p.compatible is not None:
                    p.compatible = None
                    p.update()
        if self.toast.isVisible() and not self.toast.timed:
            self.toast.hide()  # the hover message of this drag; a refusal message stays its time

    def keyPressEvent(self, event: Any) -> None:
        if event.key() == Qt.Key.Key_Escape and self._wiring is not None:
            self.cancel_wiring()
            event.accept()
            return
        step = NUDGE_BIG if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else NUDGE
        arrows = {Qt.Key.Key_Left: (-step, 0), Qt.Key.Key_Right: (step, 0),
                  Qt.Key.Key_Up: (0, -step), Qt.Key.Key_Down: (0, step)}
        if event.key() in arrows and not self.read_only and self.focusItem() is None:
            ids = self.selected_node_ids()
            if ids:
                dx, dy = arrows[event.key()]
                moves = {}
                for nid in ids:
                    x, y = self.doc.node(nid).position
                    moves[nid] = ((x, y), (round(x + dx / self.spread[0], 2), round(y + dy / self.spread[1], 2)))
                self.push(commands.MoveNodesCommand(self.doc, moves, "Nudge"))
                event.accept()
                return
        super().keyPressEvent(event)

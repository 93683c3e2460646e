"""The main window: a thin assembly of the canvas, the panels, the menus and the controllers.

Everything the user does becomes a command on one undo stack (the main document's); the stack's
clean state drives the title's modified marker. Files (open, save, recent, autosave, recovery)
live in :mod:`editor.files`, the clipboard in :mod:`editor.clipboard`; dialogs go through
:class:`~editor.prompts.Prompts` so tests can answer them without a person.
"""

from __future__ import annotations


import gc
import html
import itertools
import sys
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QByteArray, QPoint, QPointF, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (QAction, QActionGroup, QCloseEvent, QGuiApplication, QKeySequence, QUndoCommand,
                           QUndoStack)
from PySide6.QtWidgets import (QApplication, QDockWidget, QHBoxLayout, QLabel, QMainWindow, QMenu, QSizePolicy,
                               QToolButton, QUndoView, QVBoxLayout, QWidget)

from editor import commands, exporting, run as run_feature, theme as themes, toolbar, train as train_feature
from editor.clipboard import Clipboard
from editor.files import Files
from editor.document import Document
from editor.items import NodeItem
from editor.panels.inspector import Inspector
from editor.panels.lesson import LessonView
from editor.panels.minimap import Minimap
from editor.panels.palette import Palette
from editor.panels.search import BlockSearch
from editor.prompts import Prompts
from editor.scene import GraphScene
from editor.view import GraphView
from engine import blocks
from engine.blocks import Block
from engine.errors import EngineError
from engine.graph import Graph, short

AUTOSAVE_MS = 60_000
# From this many nodes on, what a loaded graph built (nodes, cards, wires: ~60 objects a node) is
# moved out of the cyclic garbage collector's sight (gc.freeze): otherwise every full collection
# walks all of it again, a pause of ~0.4 s per 5,000 nodes that lands on whatever edit comes next.
FREEZE_NODES = 1000


@dataclass
class Level:
    """One step of the breadcrumb: a document shown in a scene (the root is editable)."""

    title: str
    doc: Document
    scene: GraphScene
    node_id: str = ""  # the node opened to get here (empty for the root)


def openable(node: Any) -> bool:
    """A node whose inside can be shown: a composite, or any block that defines an inner graph."""
    if node.block is None:
        return False
    return blocks.spec(node.type).composite or type(node.block).expand is not Block.expand


#: The GUI thread's garbage collector (see :func:`collect_garbage_in_gui_thread`).
_collector: Any = None


def collect_garbage_in_gui_thread() -> None:
    """From now on Python's cyclic garbage collector runs only in this (the GUI) thread, on a
    timer, never in the pass, training, Try or export threads.

    NOTE: a collection in a worker thread that frees a closed window's widgets deletes QObjects
    there; Qt then holds its connection mutex while PySide waits for the GIL, and the GUI thread,
    holding the GIL, deletes another widget and waits for that mutex: a deadlock (found with gdb on
    a test run that hung; pyqtgraph's GarbageCollector exists for this)."""
    global _collector
    if _collector is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _collector = GarbageCollector(interval=0.1)


#: How long a thread holding the GIL keeps it while another thread waits for it (CPython's
#: ``sys.setswitchinterval``; its default is 5 ms). See :func:`hand_over_the_gil_quickly`.
SWITCH_INTERVAL = 1e-5


def hand_over_the_gil_quickly() -> None:
    """From now on a thread waiting for the GIL gets it within ~10 µs, not CPython's 5 ms.

    NOTE: the GUI thread needs the GIL for a moment at each event it hands to Python (a timer, a
    worker's signal, a paint). While it waits, each time a worker thread releases the GIL (numpy
    does around its loops, many times a training step) the GUI thread is woken and loses the race
    again, until the interval ends: a storm of futex calls that both threads pay for. Measured with
    ``benchmarks/bench_switch.py`` (issue 9; its README has the figures): two_layer_net's steps on
    a thread of their own cost ~1.2× their CPU time while the GUI thread only sat in its event loop
    with a 20 Hz timer, and ~1.0× with 10 µs; in the window, training cost ~1.4× the CLI's CPU time
    a step, and ~1.15× with 10 µs. The price: two threads that both compute in Python switch
    more often (~1.4× the CPU time while they do, ~1.1× at 5 ms), which the GUI thread's short
    bursts cause only briefly. An event also waits less while a model trains, compiles or runs."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)


class MainWindow(QMainWindow):
    document_loaded = Signal(str)
    scene_changed = Signal()  # another level (scene) is shown
    selection_changed = Signal()  # the selection of the shown scene changed (features follow it here)
    theme_changed = Signal()

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        collect_garbage_in_gui_thread()
        hand_over_the_gil_quickly()
        self.settings = settings or QSettings()
        self.prompts = Prompts(self)
        self.undo_stack = QUndoStack(self)
        self.doc = Document(title="Untitled")
        self.theme_choice = str(self.settings.value("theme", "system"))
        self.theme = themes.resolve(self.theme_choice)
        root_scene = GraphScene(self.doc, self.undo_stack, self.theme, parent=self)
        self.levels: list[Level] = [Level("Untitled", self.doc, root_scene)]
        self._pending_wire: tuple[str, str, bool] | None = None
        self.more_windows: list[MainWindow] = []  # opened with this one (more restored work)

        self.view = GraphView()
        self.view.setScene(root_scene)
        self.minimap = Minimap(self.view)
        self.minimap.enabled_by_user = self.settings.value("minimap", True, type=bool)
        self.search = BlockSearch(self)
        self.crumbs = QWidget()
        self.crumbs.setObjectName("breadcrumbs")
        self._crumb_layout = QHBoxLayout(self.crumbs)
        self._crumb_layout.setContentsMargins(8, 4, 8, 4)
        self._crumb_layout.setSpacing(2)
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.crumbs)
        col.addWidget(self.view, 1)
        self.setCentralWidget(central)

        self.block_palette = Palette()
        self.inspector = Inspector()
        self.palette_dock = self._dock("Blocks", self.block_palette, Qt.DockWidgetArea.LeftDockWidgetArea)
        # The open lesson's text, a tab beside the palette: it stays in sight while the student
        # follows its steps (selecting nodes, running, training), and gets the column's height.
        self.lesson = LessonView()
        self.lesson_dock = self._dock("Lesson", self.lesson, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tabifyDockWidget(self.palette_dock, self.lesson_dock)
        self.palette_dock.raise_()
        self.inspector_dock = self._dock("Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea)
        self.history = QUndoView(self.undo_stack)
        self.history.setEmptyLabel("Opened")
        self.history_dock = self._dock("History", self.history, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.inspector_dock, self.history_dock)
        self.inspector_dock.raise_()
        self.status_shapes = QLabel()
        self.status_params = QLabel()
        self.status_memory = QLabel()
        self._memory_cache: tuple[Graph, int, str, Any] | None = None  # (graph, revision, dtype, its estimate)
        self.status_zoom = QLabel()
        self.status_zoom.setText("100 %")
        for w in (self.status_shapes, self.status_params, self.status_memory, self.status_zoom):
            w.setContentsMargins(8, 0, 8, 0)
            self.statusBar().addPermanentWidget(w)

        self.files = Files(self.doc, self.undo_stack, self.settings, self.prompts, self._show_project, self)
        self.files.changed.connect(self._update_title)
        self.files.message.connect(lambda text, msec: self.statusBar().showMessage(text, msec))
        self.clipboard = Clipboard(self)

        self.node_menu_hooks: list[Any] = []  # (menu, node id) -> None: features add to a node's context menu
        self._make_actions()
        self._wire()
        self._attach_scene(root_scene)
        self._update_crumbs()
        self._update_title()
        self.run = run_feature.install(self)
        self.train = train_feature.install(self)
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        else:
            # First start: slim side panels, the canvas gets the room.
            self.resizeDocks([self.palette_dock, self.inspector_dock], [210, 270], Qt.Orientation.Horizontal)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.files.autosave)
        self.autosave_timer.start()
        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.connect(self._on_system_scheme)

    # --- construction ------------------------------------------------------------------------------

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.lower() + "_dock")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        widget.setMinimumWidth(200)
        return dock

    def _action(self, text: str, slot: Any, shortcut: Any = None, menu: Any = None, tip: str = "") -> QAction:
        """An action; ``shortcut`` is a StandardKey (all of the platform's bindings), a key
        sequence, or a list mixing both."""
        a = QAction(text, self)
        if shortcut is not None:
            keys: list[QKeySequence] = []
            for s in shortcut if isinstance(shortcut, list) else [shortcut]:
                if isinstance(s, QKeySequence.StandardKey):
                    keys.extend(QKeySequence.keyBindings(s))
                else:
                    keys.append(QKeySequence(s))
            unique: list[QKeySequence] = []
            for k in keys:
                if not k.isEmpty() and all(k != u for u in unique):
                    unique.append(k)
            a.setShortcuts(unique)
        a.triggered.connect(lambda *_: slot())
        if tip:
            a.setStatusTip(tip)
        self.addAction(a)
        if menu is not None:
            menu.addAction(a)
        return a

    def _make_actions(self) -> None:
        K = QKeySequence
        SK = QKeySequence.StandardKey
        mb = self.menuBar()
        m = mb.addMenu("&File")
        self.act_new = self._action("&New", self.files.new_document, SK.New, m)
        self.act_open = self._action("&Open…", self.files.open_dialog, SK.Open, m)
        self.recent_menu = m.addMenu("Open &Recent")
        self.presets_menu = m.addMenu("Open &Lesson")
        m.addSeparator()
        self.act_save = self._action("&Save", self.files.save, SK.Save, m)
        self.act_save_as = self._action("Save &As…", self.files.save_as, [SK.SaveAs, K("Ctrl+Shift+S")], m)
        self.exporting = exporting.install(self, m, None)
        m.addSeparator()
        self.act_quit = self._action("&Quit", self.close, [SK.Quit, K("Ctrl+Q")], m)

        m = mb.addMenu("&Edit")
        self.act_undo = self.undo_stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcuts(SK.Undo)
        self.act_redo = self.undo_stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts(SK.Redo)
        m.addAction(self.act_undo)
        m.addAction(self.act_redo)
        self.addAction(self.act_undo)
        self.addAction(self.act_redo)
        m.addSeparator()
        self.act_cut = self._action("Cu&t", self.clipboard.cut, SK.Cut, m)
        self.act_copy = self._action("&Copy", self.clipboard.copy, SK.Copy, m)
        self.act_paste = self._action("&Paste", self.clipboard.paste, SK.Paste, m)
        self.act_duplicate = self._action("&Duplicate", self.clipboard.duplicate, K("Ctrl+D"), m)
        self.act_delete = self._action("&Delete", self.delete_selection, [SK.Delete, K(Qt.Key.Key_Backspace)], m)
        m.addSeparator()
        self.act_select_all = self._action("Select &All", self.select_all, SK.SelectAll, m)
        self.act_rename = self._action("Re&name", self.rename, K(Qt.Key.Key_F2), m)

        m = mb.addMenu("&View")
        self.act_zoom_in = self._action("Zoom &In", self.view.zoom_in, [SK.ZoomIn, K("Ctrl+=")], m)
        self.act_zoom_out = self._action("Zoom &Out", self.view.zoom_out, SK.ZoomOut, m)
        self.act_fit = self._action("&Fit to View", self.view.fit, [K("F"), K("Ctrl+0")], m, "Show the whole graph")
        self.act_zoom_reset = self._action("Actual &Size", self.view.reset_zoom, K("Ctrl+1"), m)
        m.addSeparator()
        self.act_layout = self._action("Auto-&Layout", self.auto_layout, K("Ctrl+L"), m,
                                       "Arrange the graph in layers, left to right")
        self.act_minimap = QAction("&Minimap", self, checkable=True)
        self.act_minimap.setShortcut(K("M"))
        self.addAction(self.act_minimap)
        self.act_minimap.setChecked(self.minimap.enabled_by_user)
        self.act_minimap.toggled.connect(self._toggle_minimap)
        m.addAction(self.act_minimap)
        tm = m.addMenu("&Theme")
        group = QActionGroup(self)
        for key, label in (("system", "Follow &System"), ("light", "&Light"), ("dark", "&Dark")):
            a = QAction(label, self, checkable=True)
            a.setChecked(key == self.theme_choice)
            a.triggered.connect(lambda _=False, k=key: self.set_theme(k))
            group.addAction(a)
            tm.addAction(a)
        m.addSeparator()
        m.addAction(self.lesson_dock.toggleViewAction())
        m.addAction(self.palette_dock.toggleViewAction())
        m.addAction(self.inspector_dock.toggleViewAction())
        m.addAction(self.history_dock.toggleViewAction())

        m = mb.addMenu("&Node")
        self.act_insert = self._action("&Insert Block…", self.view.request_search, None, m, "Search blocks (Tab on the canvas)")
        self.act_open_inside = self._action("&Open Inside", self.open_selected, K("Ctrl+Return"), m,
                                            "Show a composite block's inner graph (double-click)")
        self.act_expand = self._action("&Expand Composite", self.expand_selected, K("Ctrl+E"), m,
                                       "Replace a composite block by its inner nodes")
        # Not StandardKey.Back: it includes Backspace, which deletes.
        self.act_back = self._action("&Back to Outer Graph", self.go_up, [K("Alt+Left"), K("Alt+Up")], m)
        self.files.populate_presets(self.presets_menu)
        self.files.update_recent_menu(self.recent_menu)
        self.toolbar = toolbar.install(self)

    def _wire(self) -> None:
        self.undo_stack.cleanChanged.connect(self._on_stack_changed)
        self.undo_stack.indexChanged.connect(self._on_stack_changed)
        self.undo_stack.indexChanged.connect(self._on_first_edit)
        self.block_palette.activated.connect(lambda t, p: self.insert_block(t, p, None))
        self.search.chosen.connect(self._on_search_chosen)
        self.view.block_dropped.connect(lambda t, p, pos: self.insert_block(t, p, pos))
        self.view.files_dropped.connect(self.files.open_dropped)
        self.view.search_requested.connect(self._show_search)
        self.view.zoom_changed.connect(lambda z: self.status_zoom.setText(f"{z * 100:.0f} %"))
        self.view.context_requested.connect(self._show_context_menu)
        self.inspector.message.connect(lambda text: self.statusBar().showMessage(text, 6000))

    # --- scenes and breadcrumbs ----------------------------------------------------------------------

    @property
    def level(self) -> Level:
        return self.levels[-1]

    @property
    def scene(self) -> GraphScene:
        return self.level.scene

    def _attach_scene(self, scene: GraphScene) -> None:
        self.view.setScene(scene)
        scene.selectionChanged.connect(self._on_selection)
        scene.node_activated.connect(self.open_inside)
        scene.canvas_activated.connect(self._show_search)
        scene.message.connect(self._show_status)
        scene.wire_dropped.connect(self._on_wire_dropped)
        scene.reframe_requested.connect(self.view.show_graph)
        doc = scene.doc
        doc.shapes_changed.connect(self._update_status)
        doc.shapes_changed.connect(self.minimap.schedule)
        doc.node_moved.connect(self._on_node_moved)
        doc.graph_reset.connect(self.minimap.schedule)
        editable = not scene.read_only
        self.inspector.set_document(doc, self.undo_stack if editable else None)
        for a in (self.act_cut, self.act_paste, self.act_duplicate, self.act_delete, self.act_rename,
                  self.act_layout, self.act_expand):
            a.setEnabled(editable)
        self.block_palette.setEnabled(editable)
        self._update_status()
        self.minimap.rebuild()
        self.scene_changed.emit()

    def _detach_scene(self, scene: GraphScene) -> None:
        for sig, slot in ((scene.selectionChanged, self._on_selection), (scene.node_activated, self.open_inside),
                          (scene.canvas_activated, self._show_search), (scene.message, self._show_status),
                          (scene.wire_dropped, self._on_wire_dropped), (scene.reframe_requested, self.view.show_graph)):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        doc = scene.doc
        # Only this window's own slots: the scene's connections to the document must stay.
        for sig, slot in ((doc.shapes_changed, self._update_status), (doc.shapes_changed, self.minimap.schedule),
                          (doc.graph_reset, self.minimap.schedule), (doc.node_moved, self._on_node_moved)):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass

    def _show_status(self, text: str) -> None:
        self.statusBar().showMessage(text, 6000)

    def _on_node_moved(self, _node_id: str) -> None:
        self.minimap.schedule()

    def _update_crumbs(self) -> None:
        while self._crumb_layout.count():
            item = self._crumb_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                # Hide and unparent now: deleteLater alone would leave it drawn under the new crumbs.
                widget.hide()
                widget.setParent(None)
                widget.deleteLater()
        for i, level in enumerate(self.levels):
            if i:
                sep = QLabel("›")
                self._crumb_layout.addWidget(sep)
            if i == len(self.levels) - 1:
                current = QLabel(f"<b>{html.escape(_short(level.title, 48))}</b>")
                current.setContentsMargins(4, 0, 4, 0)
                current.setToolTip(level.title)
                self._crumb_layout.addWidget(current)
            else:
                b = QToolButton()
                b.setText(_short(level.title, 28).replace("&", "&&"))
                b.setAutoRaise(True)
                b.setToolTip(f"Back to {level.title}")
                b.clicked.connect(lambda _=False, k=i: self.go_to_level(k))
                self._crumb_layout.addWidget(b)
        if len(self.levels) > 1:
            hint = QLabel("  read-only · double-click a block to look inside · Expand to edit its parts")
            hint.setEnabled(False)
            hint.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the window
            self._crumb_layout.addWidget(hint)
        self._crumb_layout.addStretch(1)
        self.act_back.setEnabled(len(self.levels) > 1)

    def open_inside(self, node_id: str) -> bool:
        """Show a composite's inner graph, read-only, with a breadcrumb back."""
        doc = self.level.doc
        node = doc.node(node_id)
        if not openable(node):
            self.statusBar().showMessage(f"{short(node.name)} is a single block ({node.type}); it has no inner graph", 5000)
            return False
        try:
            inner = commands.inner_graph(doc, node_id)
        except EngineError as exc:
            self.prompts.error("Cannot open block", str(exc))
            return False
        title = short(node.name) if node.name == node.type else f"{short(node.name)} ({node.type})"
        inner_doc = Document(inner, read_only=True, title=title)
        scene = GraphScene(inner_doc, None, self.theme, compact_stacks=True, parent=self)
        # Inner graphs come with the engine's rough columns: the view lays them out for its size.
        self._detach_scene(self.scene)
        self.levels.append(Level(title, inner_doc, scene, node_id))
        self._attach_scene(scene)
        self._update_crumbs()
        self.view.show_graph()
        return True

    def go_to_level(self, index: int) -> None:
        if index >= len(self.levels) - 1 or index < 0:
            return
        self._detach_scene(self.scene)
        while len(self.levels) > index + 1:
            level = self.levels.pop()
            level.scene.deleteLater()
            level.doc.deleteLater()
        self._attach_scene(self.scene)
        self._update_crumbs()
        self.view.show_graph()

    def go_up(self) -> None:
        self.go_to_level(len(self.levels) - 2)

    def _reset_levels(self) -> None:
        if len(self.levels) > 1:
            self.go_to_level(0)

    # --- selection and status --------------------------------------------------------------------------

    def _on_selection(self) -> None:
        try:
            # the first two are enough to know (a select all of thousands stays cheap)
            ids = list(itertools.islice((i.node_id for i in self.scene.selectedItems() if isinstance(i, NodeItem)), 2))
        except RuntimeError:  # the scene is being destroyed with the window
            return
        self.inspector.set_node(ids[0] if len(ids) == 1 else None)
        self.selection_changed.emit()

    def _update_status(self) -> None:
        doc = self.level.doc
        report = doc.report()
        n = len(doc.graph.nodes)
        if report.errors:
            k = len(report.errors)
            self.status_shapes.setText(f"<span style='color:#e5484d'>● {k} node{'s' if k != 1 else ''} with shape errors</span>")
            first = next(iter(report.errors.values()))
            self.status_shapes.setToolTip(first)
        elif report.incomplete:
            k = len(report.incomplete)
            self.status_shapes.setText(f"<span style='color:#d08a12'>● {k} node{'s' if k != 1 else ''} not fully connected</span>")
            self.status_shapes.setToolTip("")
        else:
            self.status_shapes.setText(f"<span style='color:#1faa55'>● shapes OK</span> · {n} nodes" if n else "empty graph")
            self.status_shapes.setToolTip("")
        try:
            count = doc.graph.parameter_count()
        except EngineError:
            count = 0
        self.status_params.setText(f"{count:,} parameters")
        self._update_memory()

    def _update_memory(self) -> None:
        """About how much memory one forward and backward pass of the whole graph needs
        (:mod:`engine.memory`, from the inferred shapes), in the float type its runs use; in the
        warning colour, with the engine's refusal as its tooltip, when a run would be refused for
        it, so the user knows before pressing Run."""
        from engine import memory
        from engine.archive import size_text
        from engine.errors import MemoryLimitError
        from engine.train import TrainingConfig

        graph = self.levels[0].doc.graph
        try:
            dtype = TrainingConfig.from_dict(getattr(self.files.project, "training", None) or {}).dtype
        except EngineError:
            dtype = "float32"
        try:
            c = self._memory_cache
            if c is None or c[0] is not graph or c[1:3] != (graph.revision, str(dtype)):  # once per edit
                c = self._memory_cache = (graph, graph.revision, str(dtype), memory.estimate(graph, dtype))
            est = c[3]
            lim = memory.limit()
        except EngineError as exc:  # e.g. a limit setting that is not a size
            self.status_memory.setText("<span style='color:#e5484d'>⚠ memory limit?</span>")
            self.status_memory.setToolTip(short(str(exc), 600))
            return
        if not graph.nodes:
            self.status_memory.setText("")
            self.status_memory.setToolTip("")
            return
        about = f"≈ {size_text(est.needed)} per pass"
        if lim.nbytes is not None and est.needed > lim.nbytes:
            try:
                memory.check(graph, dtype)
                why = ""
            except MemoryLimitError as exc:
                why = str(exc)
            self.status_memory.setText(f"<span style='color:#e5484d'>⚠ {about}: over the memory limit</span>")
            self.status_memory.setToolTip(short(f"A run would be refused: {why}", 900))
            return
        left_out = "" if est.complete else " Nodes whose shapes are not known yet are not counted."
        limit_text = f" Runs are refused above {size_text(lim.nbytes)} ({lim.source})." if lim.nbytes is not None else ""
        self.status_memory.setText(about + ("" if est.complete else " so far"))
        self.status_memory.setToolTip(
            f"About what one forward and backward pass holds in {est.dtype}: weights {size_text(est.weights)}, "
            f"values {size_text(est.activations)}, and a gradient for each.{left_out}{limit_text}")

    def _update_title(self) -> None:
        name = self.files.display_name()
        self.levels[0].title = name
        self.setWindowTitle(f"{name}[*] — Backprop Studio")
        self.setWindowModified(not self.undo_stack.isClean())
        first = self._crumb_layout.itemAt(0)
        if first is not None and isinstance(first.widget(), QToolButton):
            first.widget().setText(_short(name, 28).replace("&", "&&"))
        elif first is not None and isinstance(first.widget(), QLabel):
            first.widget().setText(f"<b>{html.escape(_short(name, 48))}</b>")

    def _on_stack_changed(self, *_: Any) -> None:
        self._update_title()

    def _on_first_edit(self, *_: Any) -> None:
        """A lesson stops being laid out for the window at the first edit of its graph; a
        command that leaves the graph alone (``edits_graph = False``: a training setting) does not
        count, else changing Steps before the window was first shown kept a layout too wide."""
        scene, stack = self.levels[0].scene, self.undo_stack
        if scene.adapt_layout and any(getattr(stack.command(i), "edits_graph", True) for i in range(stack.count())):
            scene.adapt_layout = False

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    # --- editing -------------------------------------------------------------------------------------------

    def push(self, command: QUndoCommand) -> None:
        if not self.scene.push(command):
            return

    def cursor_scene_pos(self) -> QPointF | None:
        pos = self.view.mapFromGlobal(self.view.cursor().pos())
        if self.view.viewport().rect().contains(pos):
            return self.view.mapToScene(pos)
        return None

    def _show_search(self, scene_pos: QPointF) -> None:
        self._pending_wire = None  # only a wire dropped just now connects the chosen block
        if self.scene.read_only:
            self.statusBar().showMessage("This view is read-only; go back to the outer graph to add blocks.", 5000)
            return
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(scene_pos))
        self.search.popup(global_pos, scene_pos)

    def _on_search_chosen(self, type_id: str, params: dict, scene_pos: QPointF) -> None:
        pending, self._pending_wire = self._pending_wire, None
        self.insert_block(type_id, params, scene_pos, connect=pending)

    def _on_wire_dropped(self, node_id: str, port: str, is_output: bool, scene_pos: QPointF) -> None:
        """A wire let go on empty canvas: pick a block, and it arrives connected (ComfyUI-style)."""
        self._show_search(scene_pos)
        self._pending_wire = (node_id, port, is_output)

    def _connect_new(self, new_id: str, pending: tuple[str, str, bool]) -> bool:
        """Connect a just-inserted node to the wire's fixed end: the first port that fits."""
        anchor, port, from_output = pending
        node = self.doc.node(new_id)
        candidates = node.input_ports() if from_output else node.output_ports()
        last_error = ""
        for p in candidates:
            args = (anchor, port, new_id, p.name) if from_output else (new_id, p.name, anchor, port)
            try:
                self.push(commands.ConnectCommand(self.doc, *args))
                return True
            except EngineError as exc:
                last_error = str(exc)
        if last_error:
            self.statusBar().showMessage(f"Inserted, but not connected: {last_error}", 8000)
        return False

    def insert_block(self, type_id: str, params: dict, scene_pos: QPointF | None,
                     connect: tuple[str, str, bool] | None = None) -> str | None:
        """Add a block centred at ``scene_pos`` (the view's centre when None); returns its id."""
        if self.scene.read_only:
            self.statusBar().showMessage("This view is read-only; go back to the outer graph to add blocks.", 5000)
            return None
        if scene_pos is None:
            scene_pos = self.view.mapToScene(self.view.viewport().rect().center())
        try:
            cmd = commands.AddNodeCommand(self.doc, type_id, params, position=(0.0, 0.0))
        except EngineError as exc:
            self.prompts.error("Cannot add block", str(exc))
            return None
        # Centre the new node's header on the drop point.
        probe = NodeItem(_probe_node(type_id, params, cmd.name))
        if connect is not None and connect[2]:
            # coming from an output: the new node's first input lands on the drop point
            cmd.position = self.scene.to_doc(QPointF(round(scene_pos.x() + 8), round(scene_pos.y() - 40)))
        elif connect is not None:
            cmd.position = self.scene.to_doc(QPointF(round(scene_pos.x() - probe.width - 8), round(scene_pos.y() - 40)))
        else:
            cmd.position = self.scene.to_doc(QPointF(round(scene_pos.x() - probe.width / 2), round(scene_pos.y() - 14)))
        if connect is not None:
            # Insert and connect are one undo step.
            self.undo_stack.beginMacro(f"Insert {short(cmd.name)} and connect")
            self.push(cmd)
            self._connect_new(cmd.node_id, connect)
            self.undo_stack.endMacro()
        else:
            self.push(cmd)
        self.scene.select_nodes([cmd.node_id])
        self.view.setFocus()
        return cmd.node_id

    def delete_selection(self) -> None:
        ids = self.scene.selected_node_ids()
        links = self.scene.selected_links()
        if ids or links:
            self.push(commands.RemoveItemsCommand(self.doc, ids, links))

    def select_all(self) -> None:
        self.scene.select_all()

    def rename(self) -> None:
        ids = self.scene.selected_node_ids()
        if len(ids) == 1:
            self.inspector_dock.show()
            self.inspector.focus_name()

    def auto_layout(self) -> None:
        if self.scene.read_only:
            self.scene.auto_layout_view()
        else:
            cmd = commands.auto_layout_command(self.doc, self.scene.node_size, scale=self.scene.spread,
                                               **self.scene.layout_hints())
            if cmd is not None:
                self.push(cmd)
        self.view.show_graph()

    def _selected_one(self) -> str | None:
        ids = [i.node_id for i in self.scene.selectedItems() if isinstance(i, NodeItem)]
        return ids[0] if len(ids) == 1 else None

    def open_selected(self) -> None:
        nid = self._selected_one()
        if nid is not None:
            self.open_inside(nid)

    def expand_selected(self) -> None:
        nid = self._selected_one()
        if nid is None:
            self.statusBar().showMessage("Select one composite block to expand it.", 5000)
            return
        try:
            cmd = commands.ExpandCompositeCommand(self.doc, nid, size_of=self.scene.node_size, scale=self.scene.spread)
        except EngineError as exc:
            self.statusBar().showMessage(str(exc), 6000)
            return
        self.push(cmd)
        self.view.show_graph()

    # --- context menu ---------------------------------------------------------------------------------------

    def context_menu(self, scene_pos: QPointF) -> QMenu:
        """The right-click menu for what is under ``scene_pos`` (a node, or the canvas)."""
        menu = QMenu(self)
        node = self.scene._node_at(scene_pos)
        editable = not self.scene.read_only
        link = self.scene.link_at(scene_pos) if node is None else None
        if link is not None:
            self.scene.clearSelection()
            self.scene.links[link].setSelected(True)
            remove = menu.addAction("Delete Link", self.delete_selection)
            remove.setEnabled(editable)
        elif node is not None:
            if not node.isSelected():
                self.scene.clearSelection()
                node.setSelected(True)
            doc_node = self.level.doc.node(node.node_id)
            if node.stack_count > 1:
                menu.addAction(f"Show All {node.stack_count} Blocks", lambda: self.scene.open_stack(node.node_id))
            elif openable(doc_node):
                menu.addAction("Open Inside", lambda: self.open_inside(node.node_id))
            if editable and doc_node.block is not None and blocks.spec(doc_node.type).composite:
                menu.addAction(self.act_expand)
            menu.addSeparator()
            for a in (self.act_rename, self.act_duplicate, self.act_copy, self.act_cut, self.act_delete):
                menu.addAction(a)
            for hook in self.node_menu_hooks:
                hook(menu, node.node_id)
        else:
            insert = menu.addAction("Insert Block…", lambda: self._show_search(scene_pos))
            insert.setEnabled(editable)
            for a in (self.act_paste, self.act_select_all):
                menu.addAction(a)
            menu.addSeparator()
            menu.addAction(self.act_layout)
            menu.addAction("Fit to View", self.view.fit)
            if len(self.levels) > 1:
                menu.addAction(self.act_back)
        return menu

    def _show_context_menu(self, scene_pos: QPointF, global_pos: QPoint) -> None:
        self.context_menu(scene_pos).exec(global_pos)

    # --- theme ------------------------------------------------------------------------------------------------

    def set_theme(self, choice: str) -> None:
        self.theme_choice = choice
        self.settings.setValue("theme", choice)
        self.apply_theme()

    def apply_theme(self) -> None:
        self.theme = themes.resolve(self.theme_choice)
        app = QApplication.instance()
        if app is not None:
            themes.apply_palette(app, self.theme)
        for level in self.levels:
            level.scene.theme = self.theme
            for item in level.scene.items():
                item.update()
        self.view.resetCachedContent()
        self.view.viewport().update()
        self.minimap.update()
        self.theme_changed.emit()

    def _on_system_scheme(self, *_: Any) -> None:
        if self.theme_choice == "system":
            self.apply_theme()

    def _toggle_minimap(self, on: bool) -> None:
        self.minimap.enabled_by_user = on
        self.settings.setValue("minimap", on)
        self.minimap.rebuild()

    # --- files ---------------------------------------------------------------------------------------------------

    # --- the document shown ----------------------------------------------------------------------------------

    def _show_project(self, project: Any) -> None:
        """Show a project the files controller loaded (or a new empty one)."""
        self._reset_levels()
        self.undo_stack.clear()
        self.doc.set_graph(project.graph if project is not None else Graph())
        description = getattr(project, "description", "") or ""
        self.lesson.set_lesson(short(getattr(project, "name", "") or "", 200), description)
        if description:  # a lesson (or any file with a text): its text in front, where it is read
            self.lesson_dock.show()
            self.lesson_dock.raise_()
        else:
            self.palette_dock.raise_()
        self.undo_stack.setClean()
        # A lesson that cannot be read whole in this window is laid out for it (until the first edit).
        self.levels[0].scene.adapt_layout = bool(self.files.is_preset)
        self.clipboard.reset()
        self._update_status()
        self.view.show_graph()
        self.minimap.rebuild()
        _settle_heap(len(self.doc.graph.nodes))

    # --- window events ------------------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.files.maybe_save():
            event.ignore()
            return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.files.drop_recovery()
        self.autosave_timer.stop()
        self.run.shutdown()
        self.train.shutdown()
        event.accept()

    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.files.open_dropped(paths)


def _settle_heap(nodes: int) -> None:
    """After a project is shown: a big one is frozen out of the collector's full passes (see
    FREEZE_NODES), after one full collection so that no garbage is frozen with it. What a previous
    big project froze is released either way (it is garbage now, or part of this one)."""
    gc.unfreeze()
    if nodes >= FREEZE_NODES:
        gc.collect()
        gc.freeze()


def _short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (breadcrumbs never widen the window)."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _probe_node(type_id: str, params: dict, name: str) -> Any:
    from engine.graph import Node
    return Node("probe", type_id, dict(blocks.create(type_id, **params).p), name, (0.0, 0.0), blocks.create(type_id, **params))

"""Wiring the run feature into the main window (see :func:`editor.run.install`)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QDockWidget, QMenu, QProgressBar, QToolButton

from editor.items import LinkItem, NodeItem
from editor.run.controller import RunController
from editor.run.controls import RunControls
from editor.run.overlay import RunOverlay
from editor.run.problems import ProblemsPanel
from editor.run.timeline import Path
from editor.run.values import ValuesPanel


class Installation(QObject):
    """Everything the run feature adds to one window, and the glue between them."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        c = RunController(window.files.current_project, window)
        c.installation = self  # type: ignore[attr-defined]
        self.controller = c
        self.overlay = RunOverlay(c, window.view)
        self.controls = RunControls(window, c, self.selected_node)
        menubar = window.menuBar()
        menubar.addMenu(self.controls.menu)
        if self.controls.buttons is not getattr(window, "toolbar", None):
            window.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.controls.buttons)
        window.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.controls.toolbar)

        self.values = ValuesPanel(c, lambda: window.scene)
        self.values_dock = self._dock("Values", self.values, Qt.DockWidgetArea.RightDockWidgetArea)
        # Below the inspector and its History tab (not a tab beside them): the numbers and the
        # params are read together.
        self.window.removeDockWidget(self.values_dock)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.values_dock, Qt.Orientation.Vertical)
        self.values_dock.show()
        window.resizeDocks([window.inspector_dock, self.values_dock], [38, 62], Qt.Orientation.Vertical)
        self.values_dock.visibilityChanged.connect(lambda on: on and self.values.refresh())
        self.problems = ProblemsPanel(c, self.jump)
        self.problems_dock = self._dock("Problems", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.problems_dock.hide()
        for m in window.menuBar().actions():
            if m.menu() is not None and m.text().replace("&", "") == "View":
                m.menu().addAction(self.values_dock.toggleViewAction())
                m.menu().addAction(self.problems_dock.toggleViewAction())
                m.menu().addAction(self.controls.toolbar.toggleViewAction())

        self.problems_button = QToolButton()
        self.problems_button.setObjectName("run_problems")
        self.problems_button.setAutoRaise(True)
        self.problems_button.setStyleSheet("QToolButton { color: #d9480f; font-weight: 600; }")
        self.problems_button.setToolTip("NaN/Inf, vanishing or exploding gradients in this pass: show the list")
        self.problems_button.clicked.connect(self.show_problems)
        self.problems_button.hide()
        window.statusBar().addPermanentWidget(self.problems_button)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.progress.setFormat("%v / %m nodes")
        self.progress.hide()
        window.statusBar().addPermanentWidget(self.progress)
        c.progress.connect(self._on_progress)
        c.message.connect(lambda text, msec: window.statusBar().showMessage(text, msec))
        c.problems_changed.connect(self._on_problems)

        self._root_doc = None
        self._watch_root(window.doc)
        window.scene_changed.connect(self._on_scene)
        window.selection_changed.connect(self._on_selection)
        window.theme_changed.connect(c.changed.emit)  # colours of numbers, wires and marks
        window.node_menu_hooks.append(self._node_menu)
        self._on_scene()
        c.default_mode_for(window.doc.graph)
        c.changed.emit()

    def _dock(self, title: str, widget: Any, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(title.lower() + "_dock")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.window.addDockWidget(area, dock)
        widget.setMinimumWidth(200)
        return dock

    # --- the document and the shown scene -------------------------------------------------------------

    def _watch_root(self, doc: Any) -> None:
        self._root_doc = doc
        doc.graph_reset.connect(self._on_reset)
        doc.shapes_changed.connect(self._on_edit)

    def _on_reset(self) -> None:
        c = self.controller
        c.clear()
        c.default_mode_for(self._root_doc.graph)
        self.values.vocab = self._vocabulary()
        c.changed.emit()

    def _on_edit(self) -> None:
        self.controller.invalidate()

    def _vocabulary(self) -> list[str] | None:
        project = getattr(self.window.files, "project", None)
        if project is None or not project.data:
            return None
        try:
            from engine.data import text_sets
            sets = text_sets(project.data)
        except Exception:  # noqa: BLE001 - no words: the views show ids
            return None
        for text in sets.values():
            return list(text.vocab)
        return None

    def level_path(self) -> Path:
        return tuple(getattr(level, "node_id", "") for level in self.window.levels[1:])

    def _on_scene(self) -> None:
        self.controller.set_level(self.level_path())
        self.overlay.attach(self.window.scene)
        self._on_selection()

    def _on_selection(self) -> None:
        try:
            items = self.window.scene.selectedItems()
        except RuntimeError:
            return
        order = {nid: k for k, nid in enumerate(self.window.scene.doc.graph.nodes)}
        nodes = sorted((i.node_id for i in items if isinstance(i, NodeItem)), key=lambda n: order.get(n, 0))
        links = [i.link for i in items if isinstance(i, LinkItem)]
        self.values.set_selection(nodes, links[0] if links and not nodes else None)

    def selected_node(self) -> str | None:
        ids = [i.node_id for i in self.window.scene.selectedItems() if isinstance(i, NodeItem)]
        if len(ids) != 1:
            return None
        members = self.window.scene.stacks.get(ids[0])
        return members[0] if members else ids[0]

    # --- panels -----------------------------------------------------------------------------------------

    def _on_progress(self, done: int, total: int) -> None:
        if total <= 0:
            self.progress.hide()
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.show()

    def _on_problems(self) -> None:
        """A button in the status bar counts the problems and opens their list (the canvas keeps
        its size: the marks on the cards say where they are)."""
        tl = self.controller.timeline
        n = len(tl.problems) if tl is not None else 0
        self.problems_button.setText(f"⚠ {n} problem{'s' if n != 1 else ''}")
        self.problems_button.setVisible(n > 0)

    def show_problems(self) -> None:
        self.problems_dock.show()
        self.problems_dock.raise_()
        # a short list under the canvas, not half the window
        self.window.resizeDocks([self.problems_dock], [110], Qt.Orientation.Vertical)

    def jump(self, path: Path, frame: int) -> None:
        """Show the node at ``path`` (opening the composites it is inside) and the pass up to
        the frame where the problem showed."""
        w = self.window
        if self.level_path() != path[:-1]:
            w.go_to_level(0)
            for nid in path[:-1]:
                if not w.open_inside(nid):
                    break
        target = path[len(self.level_path())] if len(path) > len(self.level_path()) else path[-1]
        scene = w.scene
        if target in scene.nodes:
            scene.select_nodes([target])
            head = scene._visible(target) if hasattr(scene, "_visible") else scene.nodes[target]
            if head is not None:
                w.view.centerOn(head)
        c = self.controller
        if c.cursor < frame:
            c.seek(frame)

    def _node_menu(self, menu: QMenu, node_id: str) -> None:
        menu.addSeparator()
        check = menu.addAction("Check Gradient", lambda: self.check_gradient(node_id))
        check.setToolTip("Finite differences against backprop for this node, on the values of this pass")
        menu.addAction(self.controls.act_run_to)

    def check_gradient(self, node_id: str) -> None:
        scene = self.window.scene
        scene.select_nodes([node_id])
        self.values_dock.show()
        self.values_dock.raise_()
        self.values.set_selection([node_id])
        self.values.check_gradient()

"""Wiring training into the main window (see :func:`editor.train.install`)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QLabel, QMenu

from editor.icons import icon
from editor.items import NodeItem
from editor.panels.steady import Steady
from editor.train.controller import Failure, TrainController
from editor.train.panel import TrainPanel
from editor.train.trying import TryPanel

DOCK_HEIGHT = 270  # the Train panel's first height: room for its settings and a readable curve


class Installation(QObject):
    """Everything training adds to one window, and the glue between them."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        c = TrainController(window, window)
        c.installation = self  # type: ignore[attr-defined]
        self.controller = c
        self.panel = TrainPanel(c, self.selected_node, window.undo_stack.push)
        self.train_dock = self._dock("Train", self.panel)
        self.try_panel = TryPanel(window.files.current_project)
        self.try_dock = self._dock("Try", self.try_panel)
        # NOTE: tabified only once both are shown: a tab group with a hidden dock draws its tab
        # bar in the wrong place
        self.train_dock.hide()
        self.try_dock.hide()
        self.try_dock.visibilityChanged.connect(self._tabify)
        self._sized = False

        K = QKeySequence
        self._icons = {name: icon(name) for name in ("train", "pause")}
        self.act_train = QAction(self._icons["train"], "&Train", window)
        self.act_train.setObjectName("train_toggle")
        self.act_train.setShortcut(K("Ctrl+T"))
        self.act_train.triggered.connect(lambda *_: self.toggle())
        window.addAction(self.act_train)
        self.act_stop = QAction(icon("stop"), "S&top Training", window)
        self.act_stop.setObjectName("train_stop_action")
        self.act_stop.setShortcut(K("Ctrl+Shift+T"))
        self.act_stop.triggered.connect(lambda *_: c.stop())
        window.addAction(self.act_stop)
        self.act_step = QAction(icon("step"), "Train One St&ep", window)
        self.act_step.setObjectName("train_step_action")
        self.act_step.triggered.connect(lambda *_: c.step())
        self.act_show = self.train_dock.toggleViewAction()
        self.act_show.setText("Train &Panel")
        self.act_try = self.try_dock.toggleViewAction()
        self.act_try.setText("T&ry Panel")
        self.act_try.setIcon(icon("try"))
        self.menu = QMenu("&Train", window)
        for a in (self.act_train, self.act_step, self.act_stop, None, self.act_show, self.act_try):
            if a is None:
                self.menu.addSeparator()
            else:
                self.menu.addAction(a)
        window.menuBar().addMenu(self.menu)
        bar = getattr(window, "toolbar", None)
        if bar is not None:
            bar.addSeparator()
            bar.addAction(self.act_train)
            bar.widgetForAction(self.act_train).setObjectName("train_toolbar_button")

        self.trained = QLabel()
        self.trained.setObjectName("train_trained")
        self.trained.setContentsMargins(8, 0, 8, 0)
        self.trained.setToolTip("Whether the model's weights are trained (Save keeps them in a .bps file, with the "
                                "optimiser state and the loss history)")
        # (held: its new text at each run's end repaints it, and lays out the window only when wider)
        self.trained_holder = Steady(self.trained, grow=True)
        window.statusBar().addPermanentWidget(self.trained_holder)

        # (not at each drawing of a run: a new text lays the status bar and the window out again)
        c.changed.connect(self._on_changed)
        c.message.connect(lambda text, msec: window.statusBar().showMessage(text, msec))
        c.failed.connect(self._on_failed)
        window.doc.graph_reset.connect(self._on_reset)
        window.doc.shapes_changed.connect(self._on_edit)
        window.theme_changed.connect(self._on_theme)
        window.selection_changed.connect(self._on_selection)
        self._on_theme()
        self._on_reset()

    def _dock(self, title: str, widget: Any) -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(title.lower() + "_dock")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        dock.visibilityChanged.connect(lambda on, d=dock: on and self._first_size(d))
        return dock

    def _tabify(self, visible: bool) -> None:
        w = self.window
        if visible and self.train_dock.isVisible() and not w.tabifiedDockWidgets(self.try_dock) \
                and not self.try_dock.isFloating():
            w.tabifyDockWidget(self.train_dock, self.try_dock)
            self.try_dock.raise_()

    def _first_size(self, dock: QDockWidget) -> None:
        if not self._sized:
            self._sized = True
            self.window.resizeDocks([dock], [DOCK_HEIGHT], Qt.Orientation.Vertical)

    # --- commands ---------------------------------------------------------------------------------------

    def show_panel(self, which: str = "train") -> None:
        dock = self.train_dock if which == "train" else self.try_dock
        dock.show()
        dock.raise_()

    def toggle(self) -> None:
        """The toolbar's Train: show the panel and train (or pause a run that trains)."""
        self.show_panel()
        self.controller.toggle()

    def shutdown(self) -> None:
        self.controller.shutdown()

    # --- the window's news -------------------------------------------------------------------------------

    def _on_reset(self) -> None:
        self.controller.load_project()
        self.trained_holder.refit()  # (a new document: narrower too)
        self.try_panel.refresh()
        self.act_try.setVisible(self.try_panel.available)
        if not self.try_panel.available:
            self.try_dock.hide()
        self.panel.error = ""
        self.panel.sync()
        self.panel.draw_plot()

    def _on_edit(self) -> None:
        self.controller.graph_edited()
        self.try_panel.refresh()
        self.panel.sync()

    def _on_theme(self) -> None:
        self.panel.plot.set_theme(self.window.theme)
        self.panel.draw_plot()

    def _on_changed(self) -> None:
        c = self.controller
        running = c.running
        if running != getattr(self, "_shows_pause", None):
            self._shows_pause = running
            # NOTE: the same two icons every time: a new one is rendered from its SVG again (twice
            # a press of Train, at its start and its end); these keep their pixmaps, per theme
            self.act_train.setIcon(self._icons["pause" if running else "train"])
        self.act_train.setText("&Pause Training" if running else ("&Resume Training" if c.state == "paused" else "&Train"))
        self.act_train.setToolTip(("Pause training" if running else "Train the model (show the Train panel)") + " (Ctrl+T)")
        self.act_stop.setEnabled(running or c.state in ("paused", "failed"))
        self.act_step.setEnabled(not running)
        self._show_trained()
        self.try_panel.set_trained(c.step_count > 0)

    def _show_trained(self) -> None:
        c = self.controller
        self.trained.setText(("● " if c.step_count else "○ ") + c.trained_text())

    def _on_failed(self, failure: Failure) -> None:
        self.show_panel()
        self.window.statusBar().showMessage(f"Training stopped at step {failure.step:,}: NaN or Inf at "
                                            f"{failure.node_label}", 10000)

    def _on_selection(self) -> None:
        if self.panel.tabs.currentIndex() == 1:
            self.panel.show_weights()

    def selected_node(self) -> str | None:
        """The node selected on the top-level canvas (the Weights view shows it)."""
        if len(self.window.levels) > 1:
            return self.window.levels[1].node_id  # inside a composite: the composite itself
        try:
            ids = [i.node_id for i in self.window.scene.selectedItems() if isinstance(i, NodeItem)]
        except RuntimeError:
            return None
        return ids[0] if len(ids) == 1 else None

"""The run controls: actions with icons, tooltips and keys (in the Run menu and a toolbar), the
speed, the data mode, and a timeline scrubber over the frames of the shown level.

Keys follow debuggers and players: F5 runs (here: the whole forward pass), F6 the whole
backward pass, F10 steps, Shift+F10 steps back, F8 plays and pauses, Ctrl+F10 runs to the
selected node, Shift+F5 stops, Ctrl+Shift+F5 resets.
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMenu, QSizePolicy, QSlider, QToolBar, QWidget

from editor.icons import icon
from editor.run.controller import SPEEDS, RunController


class Scrubber(QWidget):
    """A slider over the frames of the shown level, and where we are in words."""

    def __init__(self, controller: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 0, 6, 0)
        row.setSpacing(8)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("run_scrubber")
        self.slider.setMinimumWidth(120)
        self.slider.setToolTip("The pass, node by node: drag to go back and forth (Home, End, ←, → when focused)")
        self.slider.setPageStep(1)
        self.label = QLabel()
        self.label.setMinimumWidth(150)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.slider.valueChanged.connect(self._moved)
        controller.changed.connect(self.sync)
        self._syncing = False
        self.sync()

    def _moved(self, value: int) -> None:
        if not self._syncing:
            self.controller.pause()
            self.controller.seek_position(value)

    def sync(self) -> None:
        c = self.controller
        order = c.visible()
        self._syncing = True
        try:
            self.slider.setRange(0, len(order))
            self.slider.setValue(c.position())
        finally:
            self._syncing = False
        self.slider.setEnabled(bool(order) and not c.stale)
        if c.timeline is None:
            self.label.setText("no pass yet" if not c.busy else "running…")
        elif c.stale:
            self.label.setText("stale: run again")
        else:
            f = c.frame()
            phase = "start" if f is None else f.phase
            self.label.setText(f"{phase} · {c.position()} / {len(order)}{'' if c.timeline.finished else '…'}")


class RunControls:
    """Creates the run actions, the Run menu and the Run toolbar for ``window``."""

    def __init__(self, window: Any, controller: RunController, selected: Callable[[], str | None]) -> None:
        self.window = window
        self.controller = controller
        c = controller
        K = QKeySequence

        def act(name: str, text: str, slot: Callable[[], Any], keys: list[str], tip: str, icon_name: str) -> QAction:
            a = QAction(icon(icon_name), text, window)
            a.setObjectName(f"run_{name}")
            a.setShortcuts([K(k) for k in keys])
            shown = ", ".join(K(k).toString(K.SequenceFormat.NativeText) for k in keys)
            a.setToolTip(f"<b>{text.replace('&', '')}</b> ({shown})<br>{tip}")
            a.setStatusTip(tip)
            a.triggered.connect(lambda *_: slot())
            window.addAction(a)
            return a

        self.act_forward = act("forward", "&Forward", c.forward, ["F5"],
                               "Run the whole forward pass: every node computes its value", "forward")
        self.act_backward = act("backward", "&Backward", c.backward, ["F6"],
                                "Run the whole pass, then backpropagate: every wire gets its gradient", "backward")
        self.act_step = act("step", "&Step", c.step, ["F10", "Ctrl+Right"],
                            "One node: forward in topological order, then backward in reverse", "step")
        self.act_step_back = act("step_back", "Step Bac&k", c.step_back, ["Shift+F10", "Ctrl+Left"],
                                 "Undo one step of the pass (the values stay computed)", "step-back")
        self.act_play = act("play", "&Play", c.toggle_play, ["F8"],
                            "Animate the pass node by node at the chosen speed; again to pause", "play")
        self.act_stop = act("stop", "S&top", c.stop, ["Shift+F5"],
                            "Stop computing the pass (what ran so far stays) and stop playing", "stop")
        self.act_reset = act("reset", "&Reset", c.reset, ["Ctrl+Shift+F5"],
                             "Back to before the pass; the next Step starts it again", "reset")
        self.act_run_to = act("run_to", "Run to &Here", lambda: c.run_to(selected()), ["Ctrl+F10"],
                              "Play until the selected node runs (forward, then backward)", "run-to-here")
        self.act_one = QAction("&One Example", window, checkable=True)
        self.act_one.setObjectName("run_one_example")
        self.act_one.setToolTip("<b>One example</b><br>Run on a single example, so every wire carries plain numbers "
                                "as on the slides (off: the lesson's batch, as <code>backprop-studio run</code>)")
        self.act_one.toggled.connect(c.set_one_example)
        self.act_local = QAction("&Local Derivatives", window, checkable=True)
        self.act_local.setObjectName("run_local")
        self.act_local.setToolTip("<b>Local derivatives</b><br>Write ∂out/∂in on each wire where it is a single number")
        self.act_local.toggled.connect(c.set_show_local)

        self.menu = QMenu("&Run", window)
        for a in (self.act_forward, self.act_backward, None, self.act_step, self.act_step_back, self.act_play,
                  self.act_run_to, None, self.act_stop, self.act_reset, None, self.act_one, self.act_local):
            if a is None:
                self.menu.addSeparator()
            else:
                self.menu.addAction(a)
        self.speed_menu = self.menu.addMenu("Sp&eed")
        self.speed = QComboBox()
        self.speed.setObjectName("run_speed")
        self.speed.setToolTip("Play speed: nodes per second")
        for s in SPEEDS:
            self.speed.addItem(f"{s:g} nodes/s", s)
            a = self.speed_menu.addAction(f"{s:g} nodes per second", lambda s=s: self._set_speed(s))
            a.setCheckable(True)
        self.speed.setCurrentIndex(SPEEDS.index(c.speed))
        self.speed.currentIndexChanged.connect(lambda i: self._set_speed(SPEEDS[i]))
        self._sync_speed_menu()

        # The run buttons join the window's toolbar after its last separator (editor.toolbar);
        # the timeline gets a row of its own under it: the scrubber wants the width.
        main_bar = getattr(window, "toolbar", None)
        self.buttons = main_bar if isinstance(main_bar, QToolBar) else QToolBar("Run", window)
        for a in (self.act_forward, self.act_backward, self.act_step_back, self.act_step, self.act_play,
                  self.act_run_to, self.act_stop, self.act_reset):
            self.buttons.addAction(a)
        self.buttons.addWidget(self.speed)
        self.toolbar = QToolBar("Timeline", window)
        self.toolbar.setObjectName("run_toolbar")
        self.toolbar.setMovable(False)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.toolbar.addAction(self.act_one)
        self.toolbar.addAction(self.act_local)
        self.toolbar.addSeparator()
        self.scrubber = Scrubber(c)
        self.toolbar.addWidget(self.scrubber)

        c.playing_changed.connect(self._on_playing)
        c.busy_changed.connect(lambda busy: self.act_stop.setEnabled(busy or c.playing))
        c.changed.connect(self._sync)
        c.locked_changed.connect(self._sync)
        self._on_playing(False)
        self._sync()

    def _set_speed(self, s: float) -> None:
        self.controller.set_speed(s)
        if self.speed.currentData() != s:
            self.speed.setCurrentIndex(SPEEDS.index(s))
        self._sync_speed_menu()

    def _sync_speed_menu(self) -> None:
        for a, s in zip(self.speed_menu.actions(), SPEEDS):
            a.setChecked(s == self.controller.speed)

    def _on_playing(self, playing: bool) -> None:
        self.act_play.setIcon(icon("pause" if playing else "play"))
        self.act_play.setText("&Pause" if playing else "&Play")
        self.act_stop.setEnabled(playing or self.controller.busy)

    def _sync(self) -> None:
        c = self.controller
        for a, on in ((self.act_one, c.one_example), (self.act_local, c.show_local)):
            if a.isChecked() != on:
                a.blockSignals(True)
                a.setChecked(on)
                a.blockSignals(False)
        has = c.timeline is not None and not c.stale
        self.act_step_back.setEnabled(has and c.cursor >= 0)
        self.act_reset.setEnabled(c.timeline is not None)
        # while a model trains, a pass would show weights that change under it: the run waits
        for a in (self.act_forward, self.act_backward, self.act_step, self.act_play, self.act_run_to):
            a.setEnabled(not c.locked)

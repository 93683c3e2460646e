"""The Train panel: the file's training settings, editable; Train, Pause, Stop and Step; the
progress with its speed and the time left; the loss curve with the lesson's metric; the best
evaluation kept; a failed run's message with the offer to roll back; and the weights of the
selected node before training and now.

Every setting edit is an undoable command (:mod:`editor.train.settings`); a value the engine
refuses keeps the old one and says why under the buttons. The curve redraws at most a few times
a second, whatever the speed of the run.
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable

from PySide6.QtCore import QLocale, Qt, QTimer, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QSizePolicy, QSpinBox, QStackedWidget, QTabBar, QToolButton, QVBoxLayout,
                               QWidget)

from editor.icons import icon
from editor.panels.steady import Steady
from editor.train.controller import TrainController
from editor.train.plot import LossPlot
from editor.train.weights import WeightsView
from engine import metrics
from engine.errors import EngineError

REDRAW_MS = 250  # the curve redraws at most this often
OPTIMIZERS = (("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW"))


class NumberEdit(QLineEdit):
    """A number typed in, committed on Enter or leaving the field (``committed``); shows
    numbers in their shortest form (0.001, 1e-05)."""

    committed = Signal(float)

    def __init__(self, tip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        validator = QDoubleValidator(self)
        validator.setLocale(QLocale.c())
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.setValidator(validator)
        self.setToolTip(tip)
        self.setMaximumWidth(84)
        self.editingFinished.connect(self._commit)
        self._value: float | None = None

    def set_value(self, value: float | None) -> None:
        self._value = value
        self.setText("" if value is None else f"{value:g}")

    def _commit(self) -> None:
        try:
            value = float(self.text())
        except ValueError:
            self.set_value(self._value)
            return
        if value != self._value:
            self.committed.emit(value)


class TrainPanel(QWidget):
    """See the module docstring. ``selected`` returns the node selected on the canvas (the
    Weights view shows it); ``push`` puts a command on the window's undo stack."""

    def __init__(self, controller: TrainController, selected: Callable[[], str | None], push: Callable[[Any], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.selected = selected
        self.push = push
        self.confirm: Callable[[str], bool] = self._ask  # tests answer it
        c = controller
        outer = QHBoxLayout(self)
        outer.setContentsMargins(8, 4, 8, 4)
        outer.setSpacing(12)

        # --- left: settings, buttons, progress, status --------------------------------------------------
        left = QWidget()
        left.setMaximumWidth(430)
        left.setMinimumWidth(330)
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(5)
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(4)
        self.optimizer = QComboBox()
        self.optimizer.setObjectName("train_optimizer")
        for key, text in OPTIMIZERS:
            self.optimizer.addItem(text, key)
        self.optimizer.setToolTip("SGD: p ← p − lr·g (with momentum); Adam and AdamW adapt each weight's step; "
                                  "the update rules of torch.optim")
        self.optimizer.activated.connect(lambda _i: self._set_optimizer(self.optimizer.currentData()))
        self.lr = NumberEdit("Learning rate: the size of each step")
        self.lr.setObjectName("train_lr")
        self.lr.committed.connect(lambda v: self._set_opt("lr", v, "learning rate"))
        self.momentum = NumberEdit("SGD momentum μ: b ← μb + g (0: none)")
        self.momentum.setObjectName("train_momentum")
        self.momentum.committed.connect(lambda v: self._set_opt("momentum", v, "momentum"))
        self.nesterov = QCheckBox("Nesterov")
        self.nesterov.setObjectName("train_nesterov")
        self.nesterov.setToolTip("Nesterov momentum: g ← g + μb (needs a momentum above 0)")
        self.nesterov.clicked.connect(lambda on: self._set_opt("nesterov", bool(on), "Nesterov momentum"))
        self.beta1 = NumberEdit("β₁: how much of the last steps' gradient the step keeps (Adam's momentum)")
        self.beta1.setObjectName("train_beta1")
        self.beta1.committed.connect(lambda v: self._set_beta(0, v))
        self.beta2 = NumberEdit("β₂: how long Adam remembers the gradients' size")
        self.beta2.setObjectName("train_beta2")
        self.beta2.committed.connect(lambda v: self._set_beta(1, v))
        self.decay = NumberEdit("Weight decay λ: L2 for SGD and Adam, decoupled for AdamW")
        self.decay.setObjectName("train_decay")
        self.decay.committed.connect(lambda v: self._set_opt("weight_decay", v, "weight decay"))
        self.clip_on = QCheckBox("Clip ‖∇‖ to")
        self.clip_on.setObjectName("train_clip_on")
        self.clip_on.setToolTip("Scale all the gradients down together when their norm is above this "
                                "(torch.nn.utils.clip_grad_norm_)")
        self.clip_on.clicked.connect(lambda on: self._set_clip(on))
        self.clip = NumberEdit("The largest global gradient norm a step may use")
        self.clip.setObjectName("train_clip")
        self.clip.committed.connect(lambda v: self._set_key("clip", v, "clipping"))
        self.batch = QSpinBox()
        self.batch.setObjectName("train_batch")
        self.batch.setKeyboardTracking(False)
        self.batch.setToolTip("Examples per step: the first dimension of the Inputs the data feeds")
        self.batch.valueChanged.connect(self._set_batch)
        self.rows = QLabel()
        self.steps = QSpinBox()
        self.steps.setObjectName("train_steps")
        self.steps.setKeyboardTracking(False)
        self.steps.setRange(1, 10_000_000)
        self.steps.setGroupSeparatorShown(True)
        self.steps.setToolTip("How many steps Train takes (from where the model is now)")
        self.steps.valueChanged.connect(lambda v: self._set_key("steps", int(v), "steps"))
        self.seed = QSpinBox()
        self.seed.setObjectName("train_seed")
        self.seed.setKeyboardTracking(False)
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("The initial weights and the minibatches drawn at each step come from it: the same seed, "
                             "the same run, bit for bit")
        self.seed.valueChanged.connect(lambda v: self._set_key("seed", int(v), "seed"))

        def label(text: str) -> QLabel:
            return QLabel(text)

        grid.addWidget(label("Optimizer"), 0, 0)
        grid.addWidget(self.optimizer, 0, 1)
        grid.addWidget(label("lr"), 0, 2)
        grid.addWidget(self.lr, 0, 3)
        self.row_sgd = [label("Momentum"), self.momentum, self.nesterov]
        self.row_adam = [label("β₁"), self.beta1, label("β₂"), self.beta2]
        grid.addWidget(self.row_sgd[0], 1, 0)
        grid.addWidget(self.momentum, 1, 1)
        grid.addWidget(self.nesterov, 1, 2, 1, 2)
        grid.addWidget(self.row_adam[0], 2, 0)
        grid.addWidget(self.beta1, 2, 1)
        grid.addWidget(self.row_adam[2], 2, 2)
        grid.addWidget(self.beta2, 2, 3)
        grid.addWidget(label("Weight decay"), 3, 0)
        grid.addWidget(self.decay, 3, 1)
        grid.addWidget(self.clip_on, 3, 2)
        grid.addWidget(self.clip, 3, 3)
        grid.addWidget(label("Batch"), 4, 0)
        batch_row = QHBoxLayout()
        batch_row.addWidget(self.batch)
        batch_row.addWidget(self.rows)
        grid.addLayout(batch_row, 4, 1)
        grid.addWidget(label("Steps"), 4, 2)
        grid.addWidget(self.steps, 4, 3)
        grid.addWidget(label("Seed"), 5, 0)
        grid.addWidget(self.seed, 5, 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        col.addLayout(grid)

        buttons = QHBoxLayout()
        buttons.setSpacing(4)

        def button(name: str, text: str, icon_name: str, tip: str, slot: Callable[[], None]) -> QPushButton:
            b = QPushButton(icon(icon_name), text)
            b.setObjectName(f"train_{name}")
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False: slot())
            buttons.addWidget(b)
            return b

        self.start_button = button("start", "Train", "train", "Train for the number of steps set (Ctrl+T); after a pause, "
                                   "resume", c.start)
        self.pause_button = button("pause", "Pause", "pause", "Pause after this step: the run controls then walk through "
                                   "the next training step node by node", c.pause)
        self.stop_button = button("stop", "Stop", "stop", "End the run after this step (its last evaluation is kept)", c.stop)
        self.step_button = button("step", "Step", "step", "One training step, then pause: the wires show its gradients",
                                  c.step)
        buttons.addStretch(1)
        col.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setObjectName("train_progress")
        self.progress.setTextVisible(True)
        col.addWidget(self.progress)
        self.status = QLabel()
        self.status.setObjectName("train_status")
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.status)
        failure = QHBoxLayout()
        self.rollback_button = QPushButton(icon("rollback"), "Roll Back")
        self.rollback_button.setObjectName("train_rollback")
        self.rollback_button.clicked.connect(self.roll_back)
        failure.addWidget(self.rollback_button)
        failure.addStretch(1)
        col.addLayout(failure)
        col.addStretch(1)
        outer.addWidget(left)

        # --- right: the curve or the weights --------------------------------------------------------------
        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.setContentsMargins(0, 0, 0, 0)
        rcol.setSpacing(2)
        top = QHBoxLayout()
        self.tabs = QTabBar()
        self.tabs.setObjectName("train_tabs")
        self.tabs.setDrawBase(False)
        self.tabs.setExpanding(False)
        self.tabs.addTab("Loss")
        self.tabs.addTab("Weights")
        self.tabs.setTabToolTip(1, "The selected node's weights before training and now")
        top.addWidget(self.tabs)
        self.summary = QLabel()
        self.summary.setObjectName("train_summary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top.addWidget(Steady(self.summary), 1)  # (its new text at each run's end lays nothing out)
        self.best_button = QToolButton()
        self.best_button.setObjectName("train_best")
        self.best_button.setIcon(icon("best"))
        self.best_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.best_button.clicked.connect(self.restore_best)
        self.best_holder = Steady(self.best_button, grow=True)  # (a new best's step: wider only lays out)
        top.addWidget(self.best_holder)
        self.log = QCheckBox("Log scale")
        self.log.setObjectName("train_log")
        self.log.setToolTip("The loss on a logarithmic scale: a loss that keeps falling by the same factor is a straight line")
        self.log.toggled.connect(self._on_log)
        top.addWidget(self.log)
        rcol.addLayout(top)
        self.stack = QStackedWidget()
        self.plot = LossPlot()
        self.weights = WeightsView()
        self.stack.addWidget(self.plot)
        self.stack.addWidget(self.weights)
        self.tabs.currentChanged.connect(self._on_tab)
        rcol.addWidget(self.stack, 1)
        outer.addWidget(right, 1)

        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(REDRAW_MS)
        self._redraw.timeout.connect(self.draw_plot)
        c.changed.connect(self.sync)
        c.progressed.connect(self.sync_progress)
        c.history_changed.connect(self._schedule)
        self.error = ""
        self._batch_key: tuple[Any, str] | None = None  # what _sync_batch's count was made for
        self._batched: tuple[list[str], int, int] = ([], 0, 0)
        self.sync()
        self.draw_plot()

    # --- settings --------------------------------------------------------------------------------------

    def _commit(self, training: dict[str, Any], text: str, merge: str) -> None:
        from editor.train.settings import SetTrainingCommand
        try:
            self.push(SetTrainingCommand(self.controller, training, text, merge_key=merge))
            self.error = ""
        except EngineError as exc:
            self.error = str(exc)
        self.sync()

    def _set_opt(self, key: str, value: Any, what: str) -> None:
        training = self.controller.training()
        opt = dict(training.get("optimizer", {"type": "sgd"}))
        opt.setdefault("type", "sgd")
        opt[key] = value
        self._commit({**training, "optimizer": opt}, f"Set the {what} to {value:g}" if not isinstance(value, bool)
                     else f"Turn {what} {'on' if value else 'off'}", f"opt.{key}")

    def _set_beta(self, index: int, value: float) -> None:
        training = self.controller.training()
        opt = dict(training.get("optimizer", {}))
        betas = list(opt.get("betas", [0.9, 0.999]))
        betas[index] = value
        opt["betas"] = betas
        self._commit({**training, "optimizer": opt}, f"Set β{'₁₂'[index]} to {value:g}", f"opt.beta{index}")

    def _set_optimizer(self, type_id: str) -> None:
        training = self.controller.training()
        old = dict(training.get("optimizer", {"type": "sgd"}))
        if old.get("type", "sgd") == type_id:
            return
        # keep the learning rate and the weight decay; the rest is the new optimiser's own
        opt = {"type": type_id, **({"lr": old["lr"]} if "lr" in old else {})}
        if "weight_decay" in old and type_id != "adamw":
            opt["weight_decay"] = old["weight_decay"]
        self._commit({**training, "optimizer": opt}, f"Use {dict(OPTIMIZERS)[type_id]}", "")

    def _set_clip(self, on: bool) -> None:
        value = self.clip._value if self.clip._value else 1.0
        self._commit({**self.controller.training(), "clip": value if on else None},
                     f"Clip gradients to {value:g}" if on else "Do not clip gradients", "")

    def _set_key(self, key: str, value: Any, what: str) -> None:
        training = self.controller.training()
        if training.get(key) == value:
            return
        self._commit({**training, key: value}, f"Set the {what} to {value:g}" if isinstance(value, float) else
                     f"Set the {what} to {value}", f"key.{key}")

    def _set_batch(self, value: int) -> None:
        from editor.train.settings import batch_command
        c = self.controller
        window = c.window
        try:
            cmd = batch_command(window.doc, c.files.project, int(value))
        except EngineError as exc:
            self.error = str(exc)
            self.sync()
            return
        if cmd is not None:
            self.push(cmd)
            self.error = ""

    # --- state → widgets --------------------------------------------------------------------------------

    def sync(self) -> None:
        c = self.controller
        training = c.training()
        config = c.config()
        running = c.running
        has = bool(training) and config is not None and bool(config.loss)
        for w in (self.optimizer, self.lr, self.momentum, self.nesterov, self.beta1, self.beta2, self.decay,
                  self.clip_on, self.clip, self.batch, self.steps, self.seed):
            w.setEnabled(has and not running)
        opt = dict(config.optimizer) if config is not None else {"type": "sgd"}
        kind = opt.get("type", "sgd")
        self.optimizer.setCurrentIndex([k for k, _ in OPTIMIZERS].index(kind))
        defaults = {"sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
                    "adam": {"lr": 0.001, "weight_decay": 0.0}, "adamw": {"lr": 0.001, "weight_decay": 0.01}}[kind]
        self.lr.set_value(opt.get("lr", defaults["lr"]))
        self.momentum.set_value(opt.get("momentum", 0.0))
        self.nesterov.setChecked(bool(opt.get("nesterov", False)))
        betas = opt.get("betas", [0.9, 0.999])
        self.beta1.set_value(betas[0])
        self.beta2.set_value(betas[1])
        self.decay.set_value(opt.get("weight_decay", defaults["weight_decay"]))
        for w in self.row_sgd:
            w.setVisible(kind == "sgd")
        for w in self.row_adam:
            w.setVisible(kind != "sgd")
        clip = config.clip if config is not None else None
        self.clip_on.setChecked(clip is not None)
        self.clip.set_value(clip if clip is not None else 1.0)
        self.clip.setEnabled(has and not running and clip is not None)
        for spin, value in ((self.steps, config.steps if config is not None else 1),
                            (self.seed, config.seed if config is not None else 0)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)
        if not running:  # (it binds the data to count its rows: not at every sync of a run, when it is disabled)
            self._sync_batch()
        state = c.state
        paused = state == "paused"
        self.start_button.setText("Resume" if paused else "Train")
        self.start_button.setEnabled(has and state in ("idle", "paused", "failed"))
        self.pause_button.setEnabled(state in ("running", "preparing"))
        self.stop_button.setEnabled(state in ("running", "preparing", "pausing", "paused", "failed"))
        self.step_button.setEnabled(has and state in ("idle", "paused", "failed"))
        n = c.step_count
        self.sync_progress()
        # status
        lines = []
        if self.error:
            lines.append(f"<span style='color:#e5484d'>{html.escape(self.error, quote=False)}</span>")
        if not training:
            lines.append("<i>This graph has no training settings (no data or no loss to train on).</i>")
        elif config is not None and not config.loss:
            lines.append("<i>The training settings name no loss: set training.loss in the file.</i>")
        f = c.failure
        if f is not None and state == "failed":
            lines.append(f"<span style='color:#e5484d'><b>Training stopped at step {f.step:,}</b>: {html.escape(f.message, quote=False)}</span>"
                         + ("" if f.rollback is None else f"<br>Roll back to {html.escape(f.rollback_text, quote=False)}, the last good "
                            "checkpoint? Or lower the learning rate, or clip the gradients, and train on."))
        elif c.status:
            lines.append(html.escape(c.status, quote=False))
        elif paused:
            lines.append(f"Paused at step {n:,}. <b>Step</b> (F10) on the run toolbar walks through training step "
                         f"{n + 1:,} node by node, in training mode; <b>Resume</b> takes it and goes on.")
        elif state in ("pausing", "stopping"):
            lines.append("Finishing this step…")
        self.status.setText("<br>".join(lines))
        self.rollback_button.setVisible(f is not None and state == "failed" and f.rollback is not None)
        if f is not None and f.rollback is not None:
            self.rollback_button.setText(f"Roll Back to Step {f.rollback.step:,}")
        best = c.best
        # (shown during a run too, disabled: a button that comes and goes at each start and end
        # lays out the panel and the window again)
        self.best_holder.setVisible(best is not None and best[1].step != n)
        self.best_button.setEnabled(not running)
        if best is not None:
            ev = best[0]
            what = metrics.format_value(c.metric_kind, ev.metric) if c.metric_kind and ev.metric is not None else f"loss {ev.loss:.4g}"
            self.best_button.setText(f"Best: step {ev.step:,}")
            self.best_button.setToolTip(f"Go back to the best evaluation of this session: step {ev.step:,}, {what}")

    def sync_progress(self) -> None:
        """The progress bar, and the summary line when no run goes. While training (a few times a
        second) the bar also says the loss: a new text on the bar repaints it, a new text on the
        summary line lays the panel and the window out again."""
        c = self.controller
        n = c.step_count
        running = c.running
        total = max(c.run_end - c.run_start, 0)
        done = min(max(n - c.run_start, 0), total)
        speed = ""
        if running and c.rate > 0 and total:
            left = (total - done) / c.rate
            speed = f" · {c.rate:,.0f} steps/s · {_duration(left)} left"
        elif c.rate > 0 and total:
            speed = f" · {c.rate:,.0f} steps/s"
        bar = self.progress
        # NOTE: QProgressBar.setValue repaints at once (a repaint of its own, outside the window's
        # next one, and again for the new text): with updates off it only marks the bar for the
        # window's next repaint, which draws it with the plot and the canvas.
        bar.setUpdatesEnabled(False)
        bar.setRange(0, max(total, 1))
        bar.setValue(done if total else 0)
        loss = f" · loss {float(c.history['loss'][-1]):.4g}" if running and n else ""
        bar.setFormat(f"step {n:,}{loss}" + (f" · {done:,} / {total:,} this run" if total else "") + speed)
        bar.setUpdatesEnabled(True)
        if not running:
            self._summary()

    def _sync_batch(self) -> None:
        c = self.controller
        project = c.files.project
        self.batch.blockSignals(True)
        # (binding the data to count its rows costs more than the rest of the panel's sync, at
        # each end of a run: kept while the data and the graph are the same)
        from editor.train.controller import structure_key
        graph = c.window.doc.graph
        key = (project.data if project is not None else None, structure_key(graph))
        if self._batch_key is None or self._batch_key[0] is not key[0] or self._batch_key[1] != key[1]:
            try:
                from editor.train.settings import batched_inputs
                self._batched = batched_inputs(project, graph) if project is not None else ([], 0, 0)
            except EngineError:
                self._batched = ([], 0, 0)
            self._batch_key = key
        nodes, batch, rows = self._batched
        # (a spin box's new range, even the same one, lays out the panel and the window again:
        # only when it changes; a label's same text is nothing)
        low, high = (1, rows) if nodes else (0, 0)
        if (self.batch.minimum(), self.batch.maximum()) != (low, high):
            self.batch.setRange(low, high)
        if nodes and self.batch.value() != batch:
            self.batch.setValue(batch)
        self.rows.setText(f"of {rows:,}" if nodes else "")
        self.batch.setEnabled(self.batch.isEnabled() and bool(nodes))
        self.batch.blockSignals(False)

    def _summary(self) -> None:
        c = self.controller
        n = c.step_count
        parts = []
        if n:
            parts.append(f"loss {float(c.history['loss'][-1]):.4g} at step {n:,}")
        ev = c.latest()
        if ev is not None and c.metric_kind and ev.metric is not None:
            parts.append(f"{metrics.label(c.metric_kind)} <b>{metrics.format_value(c.metric_kind, ev.metric)}</b>"
                         + (f" (step {ev.step:,})" if ev.step != n else ""))
        elif c.metric_kind:
            parts.append(f"{metrics.label(c.metric_kind)}: measured when training starts and stops")
        self.summary.setText(" · ".join(parts))

    def _schedule(self) -> None:
        if self.controller.running:
            # the controller draws a run a few times a second: the curve at once, in the same
            # repaint as the progress and the canvas
            self._redraw.stop()
            self.draw_plot()
        elif not self._redraw.isActive():
            self._redraw.start()

    def draw_plot(self) -> None:
        c = self.controller
        h = c.history
        minibatch = c.batch_rows is not None and c.batch_rows[0] < c.batch_rows[1]
        failed = c.failure.step if c.failure is not None and c.state == "failed" else None
        best = c.best[0].step if c.best is not None else None
        self.plot.set_data(h["step"], h["loss"], c.evaluations, c.metric_kind, best, failed, minibatch,
                           x_end=c.run_end if c.running else None)
        if not c.running:
            self._summary()
        if self.tabs.currentIndex() == 1:
            self.show_weights()

    def _on_log(self, on: bool) -> None:
        self.plot.set_log(on)
        self.draw_plot()

    def _on_tab(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        if index == 1:
            self.show_weights()

    def show_weights(self) -> None:
        """The Weights tab: the selected node's weights before training and now."""
        c = self.controller
        nid = self.selected()
        graph = c.window.doc.graph
        if nid is None or nid not in graph.nodes:
            self.weights.empty("")
            return
        before = c.initial_weights(nid)
        project = c.files.project
        now = (project.weights or {}).get(nid) if project is not None and project.weights else None
        self.weights.set_weights(graph.nodes[nid].label, before, now if now is not None else before,
                                 c.step_count if now is not None else 0)

    # --- checkpoints ------------------------------------------------------------------------------------

    def _ask(self, text: str) -> bool:
        from PySide6.QtWidgets import QMessageBox
        answer = QMessageBox.question(self, "Go back?", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                      QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def restore_best(self) -> None:
        c = self.controller
        if c.best is None or c.running:
            return
        ev, cp = c.best
        if cp.step < c.step_count and not self.confirm(
                f"Go back to step {cp.step:,}, the best evaluation of this session? The {c.step_count - cp.step:,} steps "
                "after it are dropped (the loss curve too)."):
            return
        c.restore(cp)

    def roll_back(self) -> None:
        c = self.controller
        f = c.failure
        if f is None or f.rollback is None:
            return
        c.restore(f.rollback)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {(seconds % 3600) // 60:02.0f} min"

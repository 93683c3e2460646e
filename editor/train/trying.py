"""The Try panel: type a prompt (a language model) or a sentence to translate (a translator) and
see the words the trained model answers, each with the probability it gave that word (a small
bar under it; the strongest alternatives in its tooltip), greedy or sampled with a temperature
and a seed. A word the vocabulary does not know is marked, with the nearest known words as
buttons that put them in its place, instead of an error.

The answer comes from :class:`engine.prompt.Prompter` (what ``backprop-studio generate`` uses),
on the document's current weights (trained or not, and while a run trains: its latest state),
in a worker thread.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import (QButtonGroup, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QRadioButton,
                               QSizePolicy, QSpinBox, QVBoxLayout, QWidget)

from editor.icons import icon
from engine import kernels
from engine import prompt as prompt_mod
from engine.errors import EngineError
from engine.runtime import Runtime
from engine.train import TrainingConfig


class _Signals(QObject):
    done = Signal(int, object)  # token, Answer or an error message


class TokenStrip(QWidget):
    """The answer's words in a row (wrapping), each over a bar as long as its probability."""

    PAD = 8
    BAR = 5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tokens: tuple[prompt_mod.Token, ...] = ()
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMouseTracking(True)
        self._boxes: list[tuple[QRectF, prompt_mod.Token]] = []

    def set_tokens(self, tokens: tuple[prompt_mod.Token, ...]) -> None:
        self.tokens = tokens
        self.updateGeometry()
        self._layout(self.width())
        self.update()

    def _layout(self, width: int) -> int:
        fm = QFontMetrics(self.font())
        x = y = 0.0
        line = fm.height() + self.BAR + 10 + QFontMetrics(self._small()).height()
        self._boxes = []
        for t in self.tokens:
            text = "⏎ end" if t.end else t.word
            w = max(fm.horizontalAdvance(text) + 2 * self.PAD, 44)
            if x > 0 and x + w > width:
                x, y = 0.0, y + line + 6
            self._boxes.append((QRectF(x, y, w, line), t))
            x += w + 6
        return int(y + line) if self.tokens else 0

    def _small(self) -> QFont:
        """The font of the probability under each bar."""
        font = QFont(self.font())
        font.setPointSizeF(max(7.5, font.pointSizeF() * 0.85))
        return font

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._layout(width)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(200, max(self._layout(max(self.width(), 200)), 10))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        self._layout(self.width())
        super().resizeEvent(event)

    def paintEvent(self, event: Any) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = QFontMetrics(self.font())
        accent = pal.color(QPalette.ColorRole.Highlight)
        small = self._small()
        for box, t in self._boxes:
            p.setPen(pal.color(QPalette.ColorRole.Mid))
            p.setBrush(pal.color(QPalette.ColorRole.Base))
            p.drawRoundedRect(box.adjusted(0.5, 0.5, -0.5, -0.5), 5, 5)
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText) if t.end else pal.color(QPalette.ColorRole.Text))
            p.drawText(QRectF(box.left(), box.top() + 3, box.width(), fm.height()), Qt.AlignmentFlag.AlignCenter,
                       "⏎ end" if t.end else t.word)
            bar = QRectF(box.left() + self.PAD, box.top() + fm.height() + 6, box.width() - 2 * self.PAD, self.BAR)
            p.setPen(Qt.PenStyle.NoPen)
            track = QColor(accent)
            track.setAlpha(45)
            p.setBrush(track)
            p.drawRoundedRect(bar, 2, 2)
            p.setBrush(accent)
            p.drawRoundedRect(QRectF(bar.left(), bar.top(), max(2.0, bar.width() * t.probability), bar.height()), 2, 2)
            # the number too: a bar alone does not tell 97 % from 90 %
            p.setFont(small)
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(QRectF(box.left(), bar.bottom() + 2, box.width(), box.bottom() - bar.bottom() - 2),
                       Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, _percent(t.probability))
            p.setFont(self.font())
        p.end()

    def event(self, event: Any) -> bool:
        if event.type() == event.Type.ToolTip:
            pos = event.position() if hasattr(event, "position") else event.pos()
            for box, t in self._boxes:
                if box.contains(pos):
                    rows = "".join(f"<tr><td>{html.escape(w, quote=False)}</td><td align=right>&nbsp;{100 * q:.1f} %</td></tr>"
                                   for w, q in t.alternatives)
                    self.setToolTip(f"<b>{html.escape(t.word, quote=False)}</b>: probability {100 * t.probability:.1f} %"
                                    f"<br>the model's strongest choices here:<table>{rows}</table>")
                    break
            else:
                self.setToolTip("")
        return super().event(event)


def _percent(q: float) -> str:
    """A probability as a student reads it: 97 %, 4.2 %, 0.3 %, < 0.1 %."""
    if q >= 0.995:
        return f"{100 * q:.1f} %" if q < 0.9995 else "100 %"
    if q >= 0.1:
        return f"{100 * q:.0f} %"
    return f"{100 * q:.1f} %" if q >= 0.001 else "< 0.1 %"


class TryPanel(QWidget):
    """See the module docstring. ``project`` returns the document's project (with its current
    weights); :meth:`refresh` re-reads which model and vocabulary it has."""

    def __init__(self, project: Callable[[], Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.prompter: prompt_mod.Prompter | None = None
        self.answer: prompt_mod.Answer | None = None
        self.trained = False
        self._token = 0  # the latest question asked
        self._answered = 0  # the latest question whose answer the panel shows
        self._signals = _Signals(self)
        self._signals.done.connect(self._on_done)
        col = QVBoxLayout(self)
        col.setContentsMargins(8, 6, 8, 6)
        col.setSpacing(6)
        self.about = QLabel()
        self.about.setTextFormat(Qt.TextFormat.RichText)
        self.about.setWordWrap(True)
        self.about.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.about)
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setObjectName("try_prompt")
        self.edit.setClearButtonEnabled(True)
        self.edit.returnPressed.connect(self.go)
        self.edit.textChanged.connect(self._check_words)
        row.addWidget(self.edit, 1)
        self.button = QPushButton(icon("try"), "Generate")
        self.button.setObjectName("try_go")
        self.button.clicked.connect(self.go)
        row.addWidget(self.button)
        col.addLayout(row)
        row = QHBoxLayout()
        self.greedy = QRadioButton("Greedy")
        self.greedy.setToolTip("Take the most probable word at every step")
        self.sample = QRadioButton("Sample")
        self.sample.setToolTip("Draw each word from softmax(scores / temperature), seeded: the same seed gives the same words")
        group = QButtonGroup(self)
        group.addButton(self.greedy)
        group.addButton(self.sample)
        self.greedy.setChecked(True)
        self.temperature = QDoubleSpinBox()
        self.temperature.setObjectName("try_temperature")
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(1.0)
        self.temperature.setPrefix("temperature ")
        self.seed = QSpinBox()
        self.seed.setObjectName("try_seed")
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setPrefix("seed ")
        self.max_words = QSpinBox()
        self.max_words.setRange(1, 200)
        self.max_words.setValue(20)
        self.max_words.setPrefix("up to ")
        self.max_words.setSuffix(" words")
        for w in (self.greedy, self.sample, self.temperature, self.seed, self.max_words):
            row.addWidget(w)
        row.addStretch(1)
        self.sample.toggled.connect(self._sync_mode)
        col.addLayout(row)
        self.unknown = QWidget()
        self.unknown_row = QHBoxLayout(self.unknown)
        self.unknown_row.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.unknown)
        self.strip = TokenStrip()
        self.strip.setObjectName("try_answer")
        col.addWidget(self.strip)
        self.result = QLabel()
        self.result.setObjectName("try_result")
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.result.setWordWrap(True)
        self.result.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.result)
        col.addStretch(1)
        self._sync_mode()
        self.refresh()

    # --- the model ------------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.prompter is not None

    def refresh(self) -> None:
        """Find the document's language model or translator and its vocabulary (a new file, an
        edit)."""
        try:
            project = self.project()
        except (EngineError, KeyError, ValueError):
            project = None
        try:
            self.prompter = prompt_mod.Prompter(project) if project is not None else None
        except (EngineError, KeyError, ValueError):
            self.prompter = None
        # (also without a model to try: set_trained refreshes only when this changes)
        self.trained = bool(project is not None and project.weights)
        p = self.prompter
        if p is None:
            self.about.setText("<i>This graph has no language model or translator to try.</i>")
            self.edit.setEnabled(False)
            self.button.setEnabled(False)
            return
        self.edit.setEnabled(True)
        self.button.setEnabled(True)
        self.button.setText("Translate" if p.translating else "Generate")
        words = [w for w in p.text.vocab if w not in (p.text.bos, p.text.eos, p.text.pad)]
        task = ("Type a sentence in the source language; the translator answers word by word." if p.translating else
                "Type the start of a sentence; the language model continues it word by word.")
        self.about.setText(f"{task} It knows {len(words)} words: {html.escape(', '.join(words[:14]), quote=False)}"
                           f"{', …' if len(words) > 14 else '.'}"
                           + ("" if self.trained else " <b>Not trained yet</b>: its answers are guesses (Train first)."))
        if not self.edit.text():
            example = p.text.pairs[0][0] if p.translating and p.text.pairs else \
                " ".join(p.text.sentences[0].split()[:3]) if p.text.sentences else ""
            self.edit.setPlaceholderText(example)
        self._check_words()

    def set_trained(self, trained: bool) -> None:
        if trained != self.trained:
            self.refresh()

    def _sync_mode(self) -> None:
        on = self.sample.isChecked()
        self.temperature.setEnabled(on)
        self.seed.setEnabled(on)

    def _check_words(self) -> None:
        """Mark the prompt's unknown words, with buttons for the nearest known ones."""
        while self.unknown_row.count():
            item = self.unknown_row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        p = self.prompter
        bad = [w for w in p.words(self.edit.text())] if p is not None else []
        bad = [w for w in bad if not w.known]
        self.unknown.setVisible(bool(bad))
        for w in bad[:3]:
            label = QLabel(f"<span style='color:#d9480f'>“{html.escape(w.text, quote=False)}” is not in the vocabulary</span>"
                           + (": did you mean" if w.suggestions else " (no word is close)"))
            label.setTextFormat(Qt.TextFormat.RichText)
            self.unknown_row.addWidget(label)
            for s in w.suggestions:
                b = QPushButton(s)
                b.setObjectName(f"try_suggest_{s}")
                b.setToolTip(f"Put “{s}” in place of “{w.text}”")
                b.clicked.connect(lambda _=False, old=w.text, new=s: self.replace_word(old, new))
                self.unknown_row.addWidget(b)
        self.unknown_row.addStretch(1)
        self.button.setEnabled(p is not None and not bad and bool(self.edit.text().strip() or self.edit.placeholderText()))

    def replace_word(self, old: str, new: str) -> None:
        words = self.edit.text().split()
        self.edit.setText(" ".join(new if w == old else w for w in words))

    # --- answering ------------------------------------------------------------------------------------

    def go(self) -> None:
        """Answer the prompt (the placeholder's example when nothing is typed)."""
        p = self.prompter
        if p is None or not self.button.isEnabled():
            return
        text = self.edit.text().strip() or self.edit.placeholderText()
        if not text:
            return
        if not self.edit.text().strip():
            self.edit.setText(text)
        try:
            project = self.project()
        except Exception as exc:  # noqa: BLE001 - a document that cannot be copied: say so
            self.result.setText(f"<span style='color:#e5484d'>Cannot answer: {html.escape(str(exc), quote=False)}</span>")
            return
        self._token += 1
        token = self._token
        self.answer = None  # the last answer was to another question (or another lesson)
        temperature = self.temperature.value() if self.sample.isChecked() else 0.0
        seed, limit = self.seed.value(), self.max_words.value()
        self.result.setText("<i>Thinking…</i>")
        self.button.setEnabled(False)

        def work() -> None:
            try:
                config = TrainingConfig.from_dict(project.training)
                runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=config.dtype)
                plan = prompt_mod.plan_kernels(runtime, limit)
                with kernels.using(plan.backend):
                    answer: Any = p.answer(runtime, text, max_tokens=limit, temperature=temperature, seed=seed)
            except EngineError as exc:
                answer = str(exc)
            except Exception as exc:  # noqa: BLE001 - a block failing must not take the window down
                answer = f"{type(exc).__name__}: {exc}"
            try:
                self._signals.done.emit(token, answer)
            except RuntimeError:
                pass  # the window closed meanwhile

        threading.Thread(target=work, name="try", daemon=True).start()

    def busy(self) -> bool:
        """Whether the latest question still waits for its answer to be shown (not only for its
        thread: the answer arrives through a queued signal after the thread has ended)."""
        return self._answered != self._token

    def _on_done(self, token: int, answer: Any) -> None:
        if token != self._token:
            return
        self._answered = token
        self._check_words()
        if isinstance(answer, str):
            self.answer = None
            self.strip.set_tokens(())
            self.result.setText(f"<span style='color:#e5484d'>{html.escape(answer, quote=False)}</span>")
            return
        self.answer = answer
        self.strip.set_tokens(answer.tokens)
        how = "greedy" if not self.sample.isChecked() else \
            f"sampled at temperature {self.temperature.value():g}, seed {self.seed.value()}"
        end = "it ended the sentence" if answer.stopped == "eos" else f"it reached {self.max_words.value()} words"
        self.result.setText(f"<b>{html.escape(answer.text, quote=False) or '(nothing)'}</b> · {how}; {end}. The bar under each word is "
                            "the probability the model gave it (point at a word for its alternatives)."
                            + ("" if self.trained else " <i>The model is not trained yet.</i>"))

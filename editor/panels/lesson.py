"""The open lesson's text, in the Lesson panel (a tab beside the palette).

Lesson descriptions are Markdown (CommonMark with GitHub's tables and lists, read by Qt's own
parser, so no extra dependency): **bold**, `code`, lists of steps, and formulas written in
Unicode (``loss = (Σ_j w_j σ(v_j·φ(x)) − y)²``). Formulas stay intact: ``$…$`` spans are kept
out of Markdown's hands (set in the serif italic of maths, ``v_j`` and ``h_(t−1)`` as subscripts,
broken only after an ``=`` and only when a side is wider than the panel), the rest
wraps at word boundaries, and a word longer than the panel breaks rather than being cut off.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QDesktopServices, QTextCursor, QTextDocument, QTextOption
from PySide6.QtWidgets import QFrame, QTextBrowser, QWidget

HINT = "Select a node to see and edit its parameters. Drag blocks from the palette, or press Tab on the canvas."
#: under a lesson: where the things it talks about are shown
LESSON_HINT = "Click a node to see its parameters in the Inspector and its numbers in Values; the Blocks tab beside this one holds every block."
INDENT = 18  # px per list level: Qt's 40 takes a sixth of a narrow panel
_MATH = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)")


def lesson_markdown(title: str, description: str) -> str:
    """The Markdown shown for a lesson: its title as a heading, its text, then how to start."""
    parts = []
    if title:
        parts.append(f"### {title}")
    if description:
        parts.append(_protect_math(_escape_angles(description)))
    parts.append(f"*{LESSON_HINT if description else HINT}*")
    return "\n\n".join(parts)


_SUB = re.compile(r"_(?:\(([^()]*)\)|([A-Za-z0-9]+))")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)


def _escape_angles(text: str) -> str:
    """``<bos>`` is a token, not an HTML tag: escape angle brackets outside code spans."""
    out, at = [], 0
    for m in _CODE.finditer(text):
        out.append(text[at:m.start()].replace("<", "&lt;").replace(">", "&gt;"))
        out.append(m.group(0))
        at = m.end()
    out.append(text[at:].replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def _subscript(m: re.Match[str]) -> str:
    return f"<sub>{m.group(1) if m.group(1) is not None else m.group(2)}</sub>"


def _protect_math(text: str) -> str:
    """``$…$`` → an inline HTML span Markdown leaves alone (no emphasis from ``_`` or ``*``)."""
    def span(m: re.Match[str]) -> str:
        # a formula breaks only after its relation sign, as TeX does (and anywhere only when one
        # side is wider than the panel); its other spaces are non-breaking
        body = m.group(1).replace(" ", "\u00a0").replace("\u00a0=\u00a0", "\u00a0= ")
        body = _SUB.sub(_subscript, body)  # v_j, h_(t−1)
        return f'<span style="font-family: serif; font-style: italic">{body}</span>'
    return _MATH.sub(span, text)


class LessonView(QTextBrowser):
    """Read-only rich text that follows the palette (light and dark) and opens links outside."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOpenLinks(False)
        self.anchorClicked.connect(QDesktopServices.openUrl)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.document().setDocumentMargin(10)
        self.document().setIndentWidth(INDENT)
        self._lesson = ("", "")
        self.set_lesson("", "")

    def set_lesson(self, title: str, description: str) -> None:
        self._lesson = (title, description)
        self.document().setMarkdown(lesson_markdown(title, description),
                                    QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
        self._tint_code()
        self._dim_hint()
        self.moveCursor(QTextCursor.MoveOperation.Start)

    def _tint_code(self) -> None:
        """Code (commands to type) on a faint background, so it stands out from the prose."""
        doc = self.document()
        tint = self.palette().alternateBase()
        block = doc.begin()
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                frag = it.fragment()
                if frag.isValid() and frag.charFormat().fontFixedPitch():
                    cursor = QTextCursor(doc)
                    cursor.setPosition(frag.position())
                    cursor.setPosition(frag.position() + frag.length(), QTextCursor.MoveMode.KeepAnchor)
                    fmt = frag.charFormat()
                    fmt.setBackground(tint)
                    cursor.setCharFormat(fmt)
                it += 1
            block = block.next()

    def _dim_hint(self) -> None:
        """The closing hint in the placeholder colour, like the empty state of other panels."""
        cursor = QTextCursor(self.document().lastBlock())
        cursor.select(QTextCursor.SelectionType.BlockUnderCursor)
        fmt = cursor.charFormat()
        fmt.setForeground(self.palette().placeholderText())
        cursor.mergeCharFormat(fmt)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self.set_lesson(*self._lesson)  # the hint's colour follows the theme

"""Cut, copy, paste and duplicate of nodes, through the system clipboard.

The clip is the saved-file form of the selected nodes and the links among them (see
:func:`editor.commands.clip_selection`); pasting validates it with the loader's own checks.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QMimeData, QObject
from PySide6.QtGui import QGuiApplication

from editor import commands
from engine import serialize
from engine.errors import EngineError, FileFormatError
from engine.graph import short

if TYPE_CHECKING:
    from editor.window import MainWindow

CLIP_MIME = "application/x-backprop-studio-graph"


class Clipboard(QObject):
    """The window's clipboard actions, working on its current scene."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self._paste_count = 0

    def reset(self) -> None:
        """A new document: the next paste lands at the first offset again."""
        self._paste_count = 0

    def copy(self) -> bool:
        w = self.window
        ids = w.scene.selected_node_ids()
        if not ids:
            return False
        clip = commands.clip_selection(w.level.doc, ids)
        mime = QMimeData()
        text = json.dumps(clip)
        mime.setData(CLIP_MIME, text.encode("utf-8"))
        mime.setText(text)
        QGuiApplication.clipboard().setMimeData(mime)
        _release_clipboard_at_exit()
        self._paste_count = 0
        return True

    def cut(self) -> None:
        w = self.window
        if self.copy():
            ids = w.scene.selected_node_ids()
            cmd = commands.RemoveItemsCommand(w.doc, ids)
            cmd.setText(f"Cut {len(ids)} node{'s' if len(ids) != 1 else ''}")
            w.push(cmd)

    def clip(self) -> dict | None:
        """What the clipboard holds, if it is a graph clip (ours, or its JSON as text)."""
        return self._read()[0]

    def _read(self) -> tuple[dict | None, str]:
        """(the graph clip, "") or (None, why the clipboard's graph cannot be pasted; "" when it
        holds no graph at all, e.g. a sentence)."""
        mime = QGuiApplication.clipboard().mimeData()
        raw = None
        ours = mime is not None and mime.hasFormat(CLIP_MIME)
        if ours:
            raw = bytes(mime.data(CLIP_MIME)).decode("utf-8", errors="replace")
        elif mime is not None and mime.hasText():
            raw = mime.text()
        if not raw:
            return None, ""
        looks_like_a_graph = ours or raw.lstrip().startswith("{")
        try:
            # bounded: size, values and nesting are checked before any recursive code sees it
            clip = serialize.parse_json(raw, source="the clipboard")
        except FileFormatError as exc:
            return None, (str(exc) if looks_like_a_graph else "")
        if isinstance(clip, dict) and isinstance(clip.get("nodes"), list):
            return clip, ""
        return None, ("the clipboard: it holds JSON, but not nodes to paste" if ours else "")

    def paste(self) -> list[str]:
        w = self.window
        clip, problem = self._read()
        if problem:
            w.statusBar().showMessage(f"Cannot paste: {problem}", 8000)
            return []
        if not clip or not clip["nodes"]:
            return []
        self._paste_count += 1
        offset = (30.0 * self._paste_count, 30.0 * self._paste_count)
        at = w.cursor_scene_pos()
        if at is not None:
            try:
                xs = [float(n["position"][0]) for n in clip["nodes"]]
                ys = [float(n["position"][1]) for n in clip["nodes"]]
            except (KeyError, IndexError, TypeError, ValueError):
                pass  # a malformed clip: PasteCommand below says what is wrong
            else:
                x, y = w.scene.to_doc(at)
                if math.isfinite(min(xs)) and math.isfinite(min(ys)):
                    offset = (x - min(xs), y - min(ys))
        return self._paste_clip(clip, offset, "Paste")

    def _paste_clip(self, clip: dict, offset: tuple[float, float], text: str) -> list[str]:
        w = self.window
        try:
            cmd = commands.PasteCommand(w.doc, clip, offset, text)
        except EngineError as exc:
            w.statusBar().showMessage(f"Cannot paste: {exc}", 8000)
            return []
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # the clip's layout, not the graph's
            w.statusBar().showMessage(f"Cannot paste: the clipboard does not hold nodes in the form Copy writes "
                                      f"({short(type(exc).__name__ + ': ' + str(exc))})", 8000)
            return []
        w.push(cmd)
        w.scene.select_nodes(cmd.node_ids)
        return cmd.node_ids

    def duplicate(self) -> list[str]:
        w = self.window
        ids = w.scene.selected_node_ids()
        if not ids:
            return []
        return self._paste_clip(commands.clip_selection(w.doc, ids), (40.0, 40.0), "Duplicate")


@functools.cache
def _release_clipboard_at_exit() -> None:
    """Take our data off the clipboard before the interpreter finalises (registered once).

    NOTE: Qt's clipboard is a C++ static destroyed after Python has shut down; if it still owns a
    QMimeData made from Python, destroying it calls into the dead interpreter and segfaults
    (PySide6 6.11). Python's atexit handlers run before that, while the QApplication lives."""

    def release() -> None:
        if QGuiApplication.instance() is None:
            return
        clipboard = QGuiApplication.clipboard()
        mime = clipboard.mimeData()
        if mime is not None and mime.hasFormat(CLIP_MIME):
            clipboard.clear()

    atexit.register(release)

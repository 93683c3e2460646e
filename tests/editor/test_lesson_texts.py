"""The lesson texts: every lesson has a short title, a few sentences on its idea, a numbered
"What to do" the student carries out in the window and a "What to look for"; the text renders as
rich text (no Markdown marks left, formulas whole); and every control it names in bold exists in
the window under that name, with the key and the menu the text gives, so that renaming a button or
a shortcut fails here. Node names in italics are nodes of the lesson (or of a block inside it)."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence, QTextCharFormat, QTextListFormat
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractButton, QApplication, QDockWidget, QMenu, QTabBar

import presets
from editor.panels.lesson import LessonView
from editor.screenshot import lesson_views
from editor.window import MainWindow
from engine import serialize

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")

SECTIONS = ("What to do", "What to look for")
TERMINAL = "*From the terminal (optional):* "
BOLD = re.compile(r"\*\*(.+?)\*\*")
# "**Step** (F10)", "**Try Panel** (Train menu)"
BOLD_WITH = re.compile(r"\*\*([^*]+)\*\* \(([^)]+)\)")
KEY = re.compile(r"^(?:(?:Ctrl|Shift|Alt)\+)*(?:F\d{1,2}|[A-Z0-9]|Left|Right|Up|Down|Return)$")
ITALIC = re.compile(r"(?<![*\w])\*(?!\*)([^*\n]+?)\*(?![*\w])")
MATH = re.compile(r"\$[^$\n]+\$")


def _parts(description: str) -> tuple[str, dict[str, str], str]:
    """(the idea, {section title: its text}, the terminal line or "")."""
    chunks = re.split(r"^#### (.+)$", description, flags=re.MULTILINE)
    about, rest = chunks[0].strip(), chunks[1:]
    sections = {title.strip(): body.strip() for title, body in zip(rest[::2], rest[1::2])}
    terminal = ""
    last = list(sections)[-1] if sections else None
    if last and TERMINAL in sections[last]:
        body, _, line = sections[last].partition(TERMINAL)
        sections[last], terminal = body.strip(), line.strip()
    return about, sections, terminal


def _project(name: str):
    return serialize.load(presets.path(name))


@pytest.mark.parametrize("name", presets.names())
def test_every_lesson_text_has_a_title_its_idea_steps_and_what_to_look_for(name):
    project = _project(name)
    assert project.name.strip() and "\n" not in project.name and len(project.name) <= 56, "a short title"
    about, sections, terminal = _parts(project.description)
    assert tuple(sections) == SECTIONS, name
    sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"“])", MATH.sub("F", about)) if s]
    assert 1 <= len(sentences) <= 4 and len(about) <= 520, f"{name}: the idea in a few sentences"
    steps = sections["What to do"].splitlines()
    assert 3 <= len(steps) <= 6, name
    for i, step in enumerate(steps, 1):
        assert step.startswith(f"{i}. "), f"{name}: a numbered list, one step a line: {step!r}"
        assert BOLD.search(step) or ITALIC.search(step), f"{name}: step {i} names a control or a node: {step!r}"
    looks = sections["What to look for"].splitlines()
    assert 2 <= len(looks) <= 4 and all(line.startswith("- ") for line in looks), name
    # a command to type is optional, on its own line at the end, never a step
    assert "`" not in about + "".join(sections.values()), f"{name}: terminal commands only on the last line"
    assert not terminal or terminal.startswith("`backprop-studio ") and terminal.endswith("`")
    words = len(project.description.split())
    assert words <= 300, f"{name}: {words} words is a wall of text for the lesson panel"


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    settings = QSettings(str(tmp_path_factory.mktemp("lessons") / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings)
    w.prompts.error = lambda title, text: None  # type: ignore[method-assign]
    w.resize(1280, 800)
    w.show()
    yield w
    w.undo_stack.setClean()
    w.close()


def _plain(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").strip()


def _controls(w: MainWindow) -> tuple[dict[str, set[str]], set[str], dict[str, set[str]]]:
    """What the window offers now: {action text: its keys}, the texts of every other control
    (buttons, check boxes, tabs, panels), and {menu title: its action texts}."""
    actions: dict[str, set[str]] = {}
    for a in w.findChildren(QAction):
        keys = {k.toString(QKeySequence.SequenceFormat.PortableText) for k in a.shortcuts()}
        actions.setdefault(_plain(a.text()), set()).update(keys)
    others: set[str] = set()
    for b in w.findChildren(QAbstractButton):
        others.add(_plain(b.text()))
    for bar in w.findChildren(QTabBar):
        others.update(_plain(bar.tabText(i)) for i in range(bar.count()))
    for dock in w.findChildren(QDockWidget):
        others.add(_plain(dock.windowTitle()))
    menus: dict[str, set[str]] = {}
    for m in w.findChildren(QMenu):
        menus.setdefault(_plain(m.title()), set()).update(_plain(a.text()) for a in m.actions())
    return actions, others, menus


def _node_names(w: MainWindow, lesson: str) -> set[str]:
    names: set[str] = set()
    for _view in lesson_views(w, lesson):
        names.update(n.name for n in w.level.doc.graph.nodes.values())
    w.go_to_level(0)
    return names


@pytest.mark.parametrize("name", presets.names())
def test_every_control_a_lesson_names_is_in_the_window(window, name):
    w = window
    assert w.files.load_path(presets.path(name), is_preset=True, remember=False)
    QApplication.processEvents()
    actions, others, menus = _controls(w)
    text = _project(name).description
    for control in BOLD.findall(text):
        assert control in actions or control in others, f"{name}: there is no control called {control!r}"
    for control, note in BOLD_WITH.findall(text):
        if KEY.match(note):
            assert note in actions.get(control, set()), f"{name}: {control!r} has no key {note}: {actions.get(control)}"
        elif note.endswith(" menu"):
            menu = note.removesuffix(" menu")
            assert control in menus.get(menu, set()), f"{name}: the {menu} menu has no {control!r}"
    names = _node_names(w, name)
    body = MATH.sub("", text.partition(TERMINAL)[0])
    for node in ITALIC.findall(body):
        assert node in names, f"{name}: {node!r} is no node of the lesson: {sorted(names)}"


@pytest.mark.parametrize("name", presets.names())
def test_the_lesson_renders_as_rich_text_with_its_steps_as_a_numbered_list(qapp, name):
    project = _project(name)
    view = LessonView()
    view.resize(270, 220)  # the lesson panel at 1280×800
    view.set_lesson(project.name, project.description)
    doc = view.document()
    plain = doc.toPlainText()
    assert plain.startswith(project.name) and doc.firstBlock().blockFormat().headingLevel() == 3
    headings = [b.text() for b in _blocks(doc) if b.blockFormat().headingLevel()]
    assert headings == [project.name, *SECTIONS]
    steps = [b for b in _blocks(doc) if b.textList() is not None
             and b.textList().format().style() == QTextListFormat.Style.ListDecimal]
    assert len(steps) == len(_parts(project.description)[1]["What to do"].splitlines())
    for mark in ("**", "`", "$", "####", "&lt;"):
        assert mark not in plain, f"{name}: {mark!r} shows as text"
    # every formula is one span in the serif of maths, and a line never runs past the panel
    formulas = [m.group(0)[1:-1] for m in MATH.finditer(project.description)]
    italic = "".join(f.text() for b in _blocks(doc) for f in _fragments(b) if f.charFormat().fontItalic()
                     and "serif" in (f.charFormat().fontFamilies() or [""])[0])
    for formula in formulas:  # v_j and h_(t−1) are set as subscripts: j, t−1
        shown = re.sub(r"_\(([^()]*)\)", r"\1", formula).replace("_", "")
        assert shown.replace(" ", "") in italic.replace(" ", "").replace("\u00a0", ""), formula
    subscripts = [f for b in _blocks(doc) for f in _fragments(b)
                  if f.charFormat().verticalAlignment() == QTextCharFormat.VerticalAlignment.AlignSubScript]
    assert bool(subscripts) == any("_" in f for f in formulas), name
    assert doc.size().width() <= view.viewport().width() + 1


def _blocks(doc):
    block = doc.begin()
    while block.isValid():
        yield block
        block = block.next()


def _fragments(block):
    it = block.begin()
    while not it.atEnd():
        if it.fragment().isValid():
            yield it.fragment()
        it += 1


def test_the_lesson_stays_in_sight_while_its_steps_are_followed(window, qtbot):
    """Following a step (clicking a node) must not hide the steps: with real clicks."""
    w = window
    assert w.files.load_path(presets.path("linear_regression"), is_preset=True, remember=False)
    QApplication.processEvents()
    qtbot.waitUntil(w.lesson.isVisible)
    item = w.scene.nodes[w.doc.graph.find("w").id]
    QTest.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     w.view.mapFromScene(item.sceneBoundingRect().center()))
    assert w.scene.selectedItems() and w.inspector.section.isVisibleTo(w.inspector)
    assert w.lesson.isVisible() and "What to do" in w.lesson.toPlainText()
    assert "Inspector" in w.lesson.toPlainText()  # the closing line says where a node's numbers are


def test_click_and_ctrl_click_select_both_recurrent_networks(window):
    """The RNN lesson's second step, with real clicks: both networks go to the Values panel."""
    w = window
    assert w.files.load_path(presets.path("rnn_vs_lstm"), is_preset=True, remember=False)
    QApplication.processEvents()
    ids = [w.doc.graph.find(n).id for n in ("SimpleRNN", "LSTM")]
    for nid, mod in zip(ids, (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ControlModifier)):
        item = w.scene.nodes[nid]
        header = item.mapToScene(item.boundingRect().center().x(), 8)
        QTest.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton, mod, w.view.mapFromScene(header))
    assert {i.node_id for i in w.scene.selectedItems() if hasattr(i, "node_id")} == set(ids)
    assert set(w.run.installation.values.nodes) == set(ids)

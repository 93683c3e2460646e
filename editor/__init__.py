"""Backprop Studio's desktop editor (PySide6 + pyqtgraph).

The editor is a projection of the engine's document model (GUIDE.md, "The editor: a projection
of the document"): :mod:`editor.document` is the only thing that mutates a graph and says so
through signals; :mod:`editor.commands` are the undoable edits; :mod:`editor.scene` and
:mod:`editor.items` mirror the document; :mod:`editor.panels` hold the palette and inspector;
:mod:`editor.window` puts it together and :func:`editor.app.run_app` starts it.
"""

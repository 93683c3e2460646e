"""The questions the editor asks a person. Tests replace these methods with scripted answers."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox, QWidget

FILE_FILTER = "Backprop Studio files (*.json *.bps);;Graph only (*.json);;Graph with weights (*.bps);;All files (*)"


class Prompts:
    """The questions the window asks. Tests replace these methods."""

    def __init__(self, parent: QWidget) -> None:
        self.parent = parent

    def save_changes(self, name: str) -> str:
        """'save', 'discard' or 'cancel'."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved changes",
                          f"Save the changes to “{name}” before closing it?",
                          QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard |
                          QMessageBox.StandardButton.Cancel, self.parent)
        box.setInformativeText("Your changes will be lost if you don't save them.")
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            QMessageBox.StandardButton(answer), "cancel")

    def restore_recovery(self, items: list[str]) -> str:
        """'restore' (each in a window of its own), 'discard' or 'later' (asked again next start)."""
        n = len(items)
        box = QMessageBox(QMessageBox.Icon.Question, "Restore unsaved work?",
                          "Backprop Studio did not close normally. It kept unsaved work:", parent=self.parent)
        box.setInformativeText("\n".join(f"• {item}" for item in items[:12]) + (f"\n… and {n - 12} more" if n > 12 else "")
                               + ("\n\nEach opens in a window of its own." if n > 1 else ""))
        restore = box.addButton("Restore" if n == 1 else f"Restore All {n}", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        later = box.addButton("Not Now", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(restore)
        box.setEscapeButton(later)
        box.exec()
        clicked = box.clickedButton()
        return "restore" if clicked is restore else "discard" if clicked is discard else "later"

    def error(self, title: str, text: str) -> None:
        QMessageBox.critical(self.parent, title, text)

    def open_path(self, directory: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open graph", directory, FILE_FILTER)
        return path

    def save_path(self, suggestion: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save graph as", suggestion, FILE_FILTER)
        return path

    def export_options(self, dialog: Any) -> Any:
        """The options of an export (``editor.exporting.Options``), or None when cancelled."""
        return dialog.options() if dialog.exec() == QDialog.DialogCode.Accepted else None

    def info(self, title: str, text: str) -> None:
        QMessageBox.information(self.parent, title, text)

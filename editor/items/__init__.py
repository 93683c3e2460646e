"""Graphics items that mirror the document: nodes, ports, links, the wire being dragged and the
message shown at the cursor. Items hold ids, never colours or model data of their own: they read
the document through the scene and the colours from the scene's theme."""

from editor.items.link import DragWire, LinkItem, ShapeLabel
from editor.items.node import NodeItem, PortItem
from editor.items.toast import Toast

__all__ = ["DragWire", "LinkItem", "NodeItem", "PortItem", "ShapeLabel", "Toast"]

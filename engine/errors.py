"""Typed errors raised by the engine.

Every message is written for the person at the keyboard: it names the node, port, parameter or
dimension involved and says what was expected, so the editor can show it verbatim where the user
is looking and the CLI can print it as one line.
"""

from __future__ import annotations


#: characters: a message longer than this is cut (a node name of a megabyte, read from a file,
#: must not make a megabyte-long message where the user is looking)
MAX_MESSAGE = 1500


class EngineError(Exception):
    """Base class of every error the engine raises on purpose. Its message is one line of at
    most :data:`MAX_MESSAGE` characters, whatever names and values it quotes."""

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str):
            message = message.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
            if len(message) > MAX_MESSAGE:
                message = message[: MAX_MESSAGE - 1] + "…"
        super().__init__(message, *args)


class GraphError(EngineError):
    """An edit or a graph that cannot be accepted."""


class UnknownBlockError(GraphError):
    """A block type id that the registry does not know."""


class ParamError(GraphError):
    """An unknown parameter, or a value of the wrong type or out of range."""


class PortError(GraphError):
    """A port that does not exist, or a link that the ports cannot carry."""


class PortKindError(PortError):
    """Token ids into a float port, or floats into an ids port."""


class PortOccupiedError(PortError):
    """An input port already has a link (an input takes at most one)."""


class CycleError(GraphError):
    """A link that would close a cycle; ``cycle`` lists the node labels on it."""

    def __init__(self, message: str, cycle: list[str] | None = None) -> None:
        super().__init__(message)
        self.cycle = cycle or []


class ShapeError(GraphError):
    """Shapes that do not fit; the message names the port, the dimension, expected and got."""


class MemoryLimitError(GraphError):
    """A graph that would need more memory than the limit (see :mod:`engine.memory`); the
    message names the node that needs the most and the numbers."""


class RuntimeFailure(EngineError):
    """Something went wrong while running the graph (missing data, a block failing)."""


class NonFiniteError(RuntimeFailure):
    """A NaN or Inf appeared; ``node`` and ``phase`` say where it appeared first."""

    def __init__(self, message: str, node: str = "", phase: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.phase = phase


class FileFormatError(EngineError):
    """A file that cannot be loaded: damaged, truncated, too large, from the future, ..."""

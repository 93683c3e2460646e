"""Training data: inline arrays and small synthetic sets, bound to Input nodes by name.

The ``"data"`` section of a graph file maps the name of an Input node to where its rows come
from. Two kinds of entry exist::

    "data": {
      "φ(x)": {"values": [[1.0, 2.0], [0.5, -1.0], [-1.0, 0.0]]},       # inline rows
      "y":    {"values": [1, -1, 1]},
      "x":    {"kind": "synthetic", "name": "xor", "field": "x", "rows": 64, "seed": 0,
               "params": {"noise": 0.2}},
      "label": {"kind": "synthetic", "name": "xor", "field": "y", "rows": 64, "seed": 0,
               "params": {"noise": 0.2}}
    }

- **inline** (``{"values": nested lists}``, optionally ``"kind": "inline"``): the array itself,
  rows first. Numbers stay as written (token ids are whole numbers).
- **synthetic** (``"kind": "synthetic"``): ``name`` is one of :data:`SYNTHETIC` (``linear``,
  ``blobs``, ``xor``, ``circles``, ``sine``, ``bars`` (images), ``recall`` (token sequences)),
  ``field`` which of its arrays (``x`` or ``y``),
  ``rows`` how many examples (default 64), ``seed`` the generator seed (default 0) and ``params``
  the set's own settings (see each generator's docstring). Entries naming the same set (same
  name, rows, seed and params) share ONE generated set, so ``x`` and ``y`` line up row by row.

- **text** (``"kind": "text"``): word-level sentences with their vocabulary, stored in the file
  so that training and generation turn words into the same ids (:class:`TextData`)::

      "context":   {"kind": "text", "field": "ids", "task": "next_token", "context": 4,
                    "vocab": ["<pad>", "<bos>", "<eos>", "the", "quick", ...],
                    "bos": "<bos>", "eos": "<eos>", "pad": "<pad>",
                    "sentences": ["the quick brown fox", ...]},
      "next word": {"kind": "text", "field": "target", "same_as": "context"}

  ``task`` is ``next_token`` (``sentences``; fields ``ids`` and ``target``) or ``translate``
  (``pairs`` of [source, target]; fields ``src``, ``tgt`` and ``target``). One entry holds the
  text; the others name it with ``same_as`` and pick a ``field``. ``bos``/``eos``/``pad`` name
  words of the vocabulary (defaults ``<bos>``, ``<eos>``, ``<pad>``; null leaves one out). A word
  that is not in the vocabulary is an error naming it. Padded target positions hold the pad's
  id: give the CrossEntropy that id as ``ignore_index``.

Binding (:func:`bind`): every Input node of the graph needs an entry. An Input's ``shape``
includes the batch dimension ``B``; a data array with ``N`` rows (its first dimension) feeds it
with rows reshaped to ``shape[1:]`` (so ``y`` with shape ``(N,)`` can feed an Input of shape
``(B, 1)``). ``B == N`` is full-batch training; ``B < N`` draws a minibatch of ``B`` distinct rows
per step from a generator seeded by ``(seed, step)``, so a run is reproducible bit for bit and a
resumed run draws the same batches as an uninterrupted one. An Input of shape ``()`` takes a
single number that is fed unchanged at every step.

Evaluation (the loss before and after training) averages the loss over the consecutive batches
``rows[0:B], rows[B:2B], …`` (a last partial batch is left out), so it does not depend on the
random draws.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from engine.blocks._base import Param, ParamType, shape_str
from engine.errors import FileFormatError, GraphError, ParamError

MAX_ROWS = 100_000
MAX_ELEMENTS = 20_000_000  # per data set; "small synthetic sets"


class DataError(FileFormatError):
    """A ``data`` section that is malformed or does not fit the graph's Input nodes."""


# --- synthetic sets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Synthetic:
    """A synthetic data set generator: ``make(rng, rows, params) -> {field: array}``."""

    name: str
    doc: str
    fields: tuple[str, ...]
    params: tuple[Param, ...]
    make: Callable[[np.random.Generator, int, Mapping[str, Any]], dict[str, np.ndarray]]


_BIAS = Param("bias_feature", ParamType.BOOL, False, "append a constant 1 to every x (a bias feature in φ(x))")
_SIGNED = ("signed", "ids")


def _with_bias(x: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1) if p["bias_feature"] else x


def _labels(y_ids: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    # signed labels are the lecture's y ∈ {−1, +1}; ids are class indices 0, 1, ...
    return (2.0 * y_ids - 1.0) if p["labels"] == "signed" else y_ids.astype(np.int64)


def _linear(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    d = p["features"]
    w = rng.normal(0.0, 1.0, d) if p["weights"] is None else np.broadcast_to(np.asarray(p["weights"], float), (d,))
    x = rng.normal(0.0, 1.0, (rows, d))
    y = x @ w + p["bias"] + p["noise"] * rng.normal(0.0, 1.0, rows)
    return {"x": _with_bias(x, p), "y": y}


def _blobs(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    d, c = p["features"], p["classes"]
    centres = np.zeros((c, d))
    if c == 2:
        u = np.ones(d) / math.sqrt(d)
        centres[0], centres[1] = -u * p["distance"] / 2, u * p["distance"] / 2
    else:
        angles = 2 * math.pi * np.arange(c) / c
        centres[:, 0] = np.cos(angles) * p["distance"] / 2
        if d > 1:
            centres[:, 1] = np.sin(angles) * p["distance"] / 2
    ids = rng.permutation(np.arange(rows) % c)
    x = centres[ids] + p["spread"] * rng.normal(0.0, 1.0, (rows, d))
    return {"x": _with_bias(x, p), "y": _labels(ids, p)}


def _xor(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    corners = rng.choice(np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]), size=rows)
    x = corners + p["noise"] * rng.normal(0.0, 1.0, (rows, 2))
    ids = (corners[:, 0] * corners[:, 1] < 0).astype(np.int64)  # exclusive or of the two signs
    return {"x": _with_bias(x, p), "y": _labels(ids, p)}


def _circles(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    ids = rng.permutation(np.arange(rows) % 2)
    angle = rng.uniform(0.0, 2 * math.pi, rows)
    radius = np.where(ids == 1, p["factor"], 1.0)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) + p["noise"] * rng.normal(0.0, 1.0, (rows, 2))
    return {"x": _with_bias(x, p), "y": _labels(ids, p)}


def _sine(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    x = rng.uniform(-math.pi, math.pi, (rows, 1))
    y = p["amplitude"] * np.sin(p["periods"] * x[:, 0]) + p["noise"] * rng.normal(0.0, 1.0, rows)
    return {"x": _with_bias(x, p), "y": y}


def _bars(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    n = p["size"]
    ids = rng.permutation(np.arange(rows) % 2)  # 0: a horizontal bar, 1: a vertical one
    x = p["noise"] * rng.normal(0.0, 1.0, (rows, 1, n, n))
    where = rng.integers(0, n, rows)
    length = rng.integers(p["min_length"], n + 1, rows)
    start = rng.integers(0, n - length + 1)
    for i in range(rows):
        span = slice(start[i], start[i] + length[i])
        if ids[i] == 0:
            x[i, 0, where[i], span] += 1.0
        else:
            x[i, 0, span, where[i]] += 1.0
    return {"x": x, "y": ids.astype(np.int64)}


def _recall(rng: np.random.Generator, rows: int, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    # ids 0 … symbols−1 are the symbols to remember; the distractors come after them
    k, m, n = p["symbols"], p["distractors"], p["length"]
    first = rng.permutation(np.arange(rows) % k)
    x = np.empty((rows, n), dtype=np.int64)
    x[:, 0] = first
    # no distractor ids: the later tokens are symbols too, so the first must be told apart by place
    x[:, 1:] = k + rng.integers(0, m, (rows, n - 1)) if m else rng.integers(0, k, (rows, n - 1))
    return {"x": x, "y": first.astype(np.int64)}


SYNTHETIC: dict[str, Synthetic] = {s.name: s for s in (
    Synthetic(
        "linear", "x ~ N(0, 1) with `features` columns; y = x·w + bias + noise·N(0, 1) (w random unless given)",
        ("x", "y"),
        (Param("features", ParamType.INT, 3, "number of features", minimum=1, maximum=10_000),
         Param("noise", ParamType.FLOAT, 0.1, "standard deviation of the noise on y", minimum=0.0),
         Param("bias", ParamType.FLOAT, 0.0, "a constant added to y"),
         Param("weights", ParamType.TENSOR, None, "the true weights (random N(0, 1) when null)", nullable=True),
         _BIAS),
        _linear,
    ),
    Synthetic(
        "blobs", "Gaussian blobs, one per class; y is the class (±1 when `labels` is signed)",
        ("x", "y"),
        (Param("features", ParamType.INT, 2, "number of features", minimum=1, maximum=10_000),
         Param("classes", ParamType.INT, 2, "number of classes", minimum=2, maximum=1000),
         Param("spread", ParamType.FLOAT, 0.5, "standard deviation around each centre", minimum=0.0),
         Param("distance", ParamType.FLOAT, 3.0, "distance between the centres of two classes", minimum=0.0),
         Param("labels", ParamType.CHOICE, "signed", "signed: y ∈ {−1, +1} (2 classes); ids: 0 … classes−1", choices=_SIGNED),
         _BIAS),
        _blobs,
    ),
    Synthetic(
        "xor", "points near the corners (±1, ±1); y says whether the two signs differ",
        ("x", "y"),
        (Param("noise", ParamType.FLOAT, 0.2, "standard deviation around each corner", minimum=0.0),
         Param("labels", ParamType.CHOICE, "signed", "signed: y ∈ {−1, +1}; ids: 0 or 1", choices=_SIGNED),
         _BIAS),
        _xor,
    ),
    Synthetic(
        "circles", "two concentric circles (radius 1 and `factor`); y says which one",
        ("x", "y"),
        (Param("factor", ParamType.FLOAT, 0.5, "radius of the inner circle", minimum=0.0),
         Param("noise", ParamType.FLOAT, 0.05, "standard deviation of the noise", minimum=0.0),
         Param("labels", ParamType.CHOICE, "signed", "signed: y ∈ {−1, +1}; ids: 0 or 1", choices=_SIGNED),
         _BIAS),
        _circles,
    ),
    Synthetic(
        "sine", "x uniform in [−π, π] (one column); y = amplitude·sin(periods·x) + noise·N(0, 1)",
        ("x", "y"),
        (Param("periods", ParamType.FLOAT, 1.0, "frequency of the sine"),
         Param("amplitude", ParamType.FLOAT, 1.0, "height of the sine"),
         Param("noise", ParamType.FLOAT, 0.0, "standard deviation of the noise on y", minimum=0.0),
         _BIAS),
        _sine,
    ),
    Synthetic(
        "bars", "images (1 channel, size × size) holding one bar of bright pixels on noise; y is 0 for a "
        "horizontal bar and 1 for a vertical one (x has shape (rows, 1, size, size))",
        ("x", "y"),
        (Param("size", ParamType.INT, 8, "height and width of each image", minimum=2, maximum=256),
         Param("min_length", ParamType.INT, 3, "shortest bar, in pixels (bars run from min_length to size)", minimum=1),
         Param("noise", ParamType.FLOAT, 0.2, "standard deviation of the noise on every pixel", minimum=0.0)),
        _bars,
    ),
    Synthetic(
        "recall", "token sequences of `length` ids: the first is one of `symbols` (ids 0 … symbols−1), the "
        "rest are random distractors (ids symbols … symbols+distractors−1); y is the first token, so a model "
        "must remember it over length−1 steps (a vocabulary of symbols+distractors ids)",
        ("x", "y"),
        (Param("length", ParamType.INT, 20, "tokens per sequence", minimum=2, maximum=10_000),
         Param("symbols", ParamType.INT, 4, "how many different first tokens (the classes)", minimum=2, maximum=1000),
         Param("distractors", ParamType.INT, 4, "how many different distractor tokens (0: the later tokens are "
               "symbols too, so only its place tells the first token apart)", minimum=0, maximum=1000)),
        _recall,
    ),
)}


def synthetic(name: str, rows: int = 64, seed: int = 0, **params: Any) -> dict[str, np.ndarray]:
    """Generate a synthetic set by name; returns ``{"x": ..., "y": ...}`` (float64 / int64)."""
    entry = normalize({"_": {"kind": "synthetic", "name": name, "field": "x", "rows": rows, "seed": seed, "params": params}})["_"]
    return _generate(entry)


def _generate(entry: Mapping[str, Any]) -> dict[str, np.ndarray]:
    gen = SYNTHETIC[entry["name"]]
    given = entry.get("params", {})
    p = {q.name: given.get(q.name, q.default) for q in gen.params}
    rows = entry.get("rows", 64)
    return gen.make(np.random.default_rng(entry.get("seed", 0)), rows, p)


# --- text ----------------------------------------------------------------------------------------

MAX_VOCAB = 100_000
TEXT_TASKS = ("next_token", "translate")
TEXT_FIELDS = {"next_token": ("ids", "target"), "translate": ("src", "tgt", "target")}
_TEXT_KEYS = ("kind", "field", "task", "vocab", "bos", "eos", "pad", "sentences", "pairs", "context")
_TEXT_REF_KEYS = ("kind", "field", "same_as")
_SPECIALS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}
_CONTEXT = Param("context", ParamType.INT, None, "windows of this many tokens", minimum=1, maximum=10_000, nullable=True)


def tokenize(text: str) -> list[str]:
    """Words of ``text``: split on white space, kept exactly as written (no lower-casing)."""
    return text.split()


@dataclass(frozen=True)
class TextData:
    """A word-level text set and its vocabulary: the ONE place where words become ids, for the
    trainer (:meth:`arrays`) and for generation (:meth:`encode_prompt`, :meth:`encode_source`,
    :meth:`decode`), so both always agree.

    ``task`` ``next_token`` reads ``sentences``; each becomes ``[bos] + words + [eos]`` (a
    special set to None is left out). With ``context`` C, every position t ≥ 1 of every sentence
    is one example: ``ids`` holds the C tokens before it (left-filled with ``pad`` near the
    start) and ``target`` the token at t: ids (N, C), target (N,), for a model that collapses a
    prefix to one vector. Without ``context``, each sentence is one example scored at every
    position: ``ids`` = tokens[:-1] and ``target`` = tokens[1:], right-filled with ``pad``:
    ids (N, L), target (N, L). Give CrossEntropy ``ignore_index`` = :attr:`pad_id` so padding
    adds nothing to the loss.

    ``task`` ``translate`` reads ``pairs`` of [source, target] sentences: ``src`` = source words
    (right-filled with pad to the longest source), ``tgt`` = ``[bos] + target words`` (the
    decoder's input, shifted right) and ``target`` = ``target words + [eos]``, both right-filled
    to the longest target + 1: src (N, Ls), tgt (N, Lt), target (N, Lt).

    Example: vocab ["<pad>", "<bos>", "<eos>", "a", "b"], sentences ["a b"], context 2 →
    ids [[0, 1], [1, 3], [3, 4]], target [3, 4, 2].
    """

    task: str
    vocab: tuple[str, ...]
    bos: str | None = "<bos>"
    eos: str | None = "<eos>"
    pad: str | None = "<pad>"
    sentences: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    context: int | None = None
    where: str = "text"

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def _special(self, which: str) -> int | None:
        word = getattr(self, which)
        return None if word is None else self.index[word]

    @property
    def bos_id(self) -> int | None:
        return self._special("bos")

    @property
    def eos_id(self) -> int | None:
        return self._special("eos")

    @property
    def pad_id(self) -> int | None:
        return self._special("pad")

    def known_words(self, limit: int = 12) -> str:
        """A few words of the vocabulary (specials left out), for error messages."""
        specials = {self.bos, self.eos, self.pad}
        words = [w for w in self.vocab if w not in specials]
        shown = ", ".join(words[:limit])
        return shown + (f", … ({len(words)} words)" if len(words) > limit else "")

    def nearest(self, word: str, n: int = 3) -> list[str]:
        """Up to ``n`` words of the vocabulary (specials left out) closest in spelling to
        ``word``, closest first: the same word in other letter case, then close spellings
        (:func:`difflib.get_close_matches`). Empty when nothing is close."""
        import difflib

        specials = {self.bos, self.eos, self.pad}
        words = [w for w in self.vocab if w not in specials]
        same_case = [w for w in words if w.lower() == word.lower() and w != word]
        close = difflib.get_close_matches(word.lower(), [w.lower() for w in words], n=n + len(same_case), cutoff=0.6)
        by_lower = {w.lower(): w for w in reversed(words)}
        out = same_case + [by_lower[c] for c in close if by_lower[c] not in same_case and by_lower[c] != word]
        return out[:n]

    def ids(self, words: list[str], what: str) -> list[int]:
        """The ids of ``words``; an unknown word is a :class:`DataError` naming it and ``what``
        (with the nearest known words, when some are close)."""
        index = self.index
        out = []
        for w in words:
            if w not in index:
                near = self.nearest(w)
                hint = f"; did you mean {' or '.join(repr(x) for x in near)}?" if near else ""
                raise DataError(f"{what}: the word {w!r} is not in the vocabulary (known words: {self.known_words()}){hint}")
            out.append(index[w])
        return out

    def decode(self, ids: list[int]) -> list[str]:
        """Words for ``ids`` (an id outside the vocabulary becomes ``<id N>``)."""
        return [self.vocab[i] if 0 <= i < len(self.vocab) else f"<id {i}>" for i in ids]

    def _sentence(self, text: str, what: str) -> list[int]:
        return ([self.bos_id] if self.bos is not None else []) + self.ids(tokenize(text), what) + (
            [self.eos_id] if self.eos is not None else [])  # type: ignore[list-item]

    def _fill(self, rows: list[list[int]], length: int, what: str, left: bool = False) -> np.ndarray:
        if any(len(r) != length for r in rows) and self.pad is None:
            raise DataError(f"{self.where}: {what} have different lengths, so they need padding; set \"pad\" to a token of the vocabulary")
        out = np.full((len(rows), length), self.pad_id if self.pad is not None else 0, dtype=np.int64)
        for i, r in enumerate(rows):
            if left:
                out[i, length - len(r):] = r
            else:
                out[i, :len(r)] = r
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The training arrays, one per field (see the class docstring); int64."""
        if self.task == "next_token":
            seqs = [self._sentence(t, f"{self.where}: sentence {i + 1} ({t!r})") for i, t in enumerate(self.sentences)]
            if self.context is not None:
                c = self.context
                windows = [s[max(0, t - c):t] for s in seqs for t in range(1, len(s))]
                targets = [s[t] for s in seqs for t in range(1, len(s))]
                if not windows:
                    raise DataError(f"{self.where}: the sentences give no example (each needs at least two tokens)")
                return {"ids": self._fill(windows, c, "the windows", left=True), "target": np.asarray(targets, dtype=np.int64)}
            length = max(len(s) for s in seqs) - 1
            if length < 1:
                raise DataError(f"{self.where}: the sentences give no example (each needs at least two tokens)")
            return {"ids": self._fill([s[:-1] for s in seqs], length, "the sentences"),
                    "target": self._fill([s[1:] for s in seqs], length, "the sentences")}
        src = [self.ids(tokenize(a), f"{self.where}: pair {i + 1} source ({a!r})") for i, (a, _) in enumerate(self.pairs)]
        tgt = [self.ids(tokenize(b), f"{self.where}: pair {i + 1} target ({b!r})") for i, (_, b) in enumerate(self.pairs)]
        bos = [self.bos_id] if self.bos is not None else []
        eos = [self.eos_id] if self.eos is not None else []
        lt = max(len(t) for t in tgt) + 1
        return {"src": self._fill(src, self.source_length, "the sources"),
                "tgt": self._fill([bos + t for t in tgt], lt, "the targets"),  # type: ignore[operator]
                "target": self._fill([t + eos for t in tgt], lt, "the targets")}  # type: ignore[operator]

    @property
    def source_length(self) -> int:
        """translate: the length every source is filled to (the longest source)."""
        return max(len(tokenize(a)) for a, _ in self.pairs)

    def encode_prompt(self, text: str) -> list[int]:
        """next_token: a prompt as the model saw prefixes in training: ``[bos] + words``, and
        with ``context`` its last C tokens left-filled with pad. Unknown word: DataError."""
        ids = ([self.bos_id] if self.bos is not None else []) + self.ids(tokenize(text), "the prompt")
        if self.context is not None:
            ids = ids[-self.context:]
            if self.pad is not None:
                ids = [self.pad_id] * (self.context - len(ids)) + ids  # type: ignore[list-item]
        return ids  # type: ignore[return-value]

    def encode_source(self, text: str) -> list[int]:
        """translate: a source sentence filled like the training sources (to :attr:`source_length`)."""
        ids = self.ids(tokenize(text), "the source sentence")
        if self.pad is not None and len(ids) < self.source_length:
            ids = ids + [self.pad_id] * (self.source_length - len(ids))  # type: ignore[list-item]
        return ids


def _text_string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key} must be non-empty text, got {json.dumps(value, ensure_ascii=False)[:40]}")
    return value


def _normalize_text(where: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    if "same_as" in entry:
        unknown = sorted(set(entry) - set(_TEXT_REF_KEYS))
        if unknown:
            raise DataError(f"{where} has unknown key {unknown[0]!r} (a text entry with 'same_as' has: field, same_as)")
        if not isinstance(entry["same_as"], str):
            raise DataError(f"{where}: 'same_as' must be the name of another data entry")
        return {"kind": "text", "field": entry.get("field", "ids"), "same_as": entry["same_as"]}
    unknown = sorted(set(entry) - set(_TEXT_KEYS))
    if unknown:
        raise DataError(f"{where} has unknown key {unknown[0]!r} (text data has: {', '.join(_TEXT_KEYS)})")
    task = entry.get("task", "next_token")
    if task not in TEXT_TASKS:
        raise DataError(f"{where}: unknown task {task!r} (choose one of: {', '.join(TEXT_TASKS)})")
    field = entry.get("field", TEXT_FIELDS[task][0])
    if field not in TEXT_FIELDS[task]:
        raise DataError(f"{where}: task {task} has no field {field!r} (fields: {', '.join(TEXT_FIELDS[task])})")
    vocab = entry.get("vocab")
    if not isinstance(vocab, list) or not vocab:
        raise DataError(f"{where}: 'vocab' must be a list of the words, such as [\"<pad>\", \"<bos>\", \"<eos>\", \"the\", …]")
    if len(vocab) > MAX_VOCAB:
        raise DataError(f"{where}: 'vocab' has {len(vocab)} words; the limit is {MAX_VOCAB}")
    seen: set[str] = set()
    for w in vocab:
        if not isinstance(w, str) or not w or len(w.split()) != 1 or w != w.strip():
            raise DataError(f"{where}: every word of 'vocab' must be text without spaces, got {json.dumps(w, ensure_ascii=False)[:40]}")
        if w in seen:
            raise DataError(f"{where}: the word {w!r} is in 'vocab' twice")
        seen.add(w)
    canon: dict[str, Any] = {"kind": "text", "field": field, "task": task, "vocab": list(vocab)}
    for key, default in _SPECIALS.items():
        value = entry.get(key, default)
        if value is not None and value not in seen:
            raise DataError(f"{where}: the {key} token {value!r} is not in 'vocab' (add it, or set \"{key}\": null)")
        if key in entry:
            canon[key] = value
    if task == "next_token":
        if "pairs" in entry:
            raise DataError(f"{where}: task next_token reads 'sentences', not 'pairs'")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{where}: 'sentences' must be a list of sentences (text, words separated by spaces)")
        canon["sentences"] = [_text_string(where, f"sentence {i + 1}", t) for i, t in enumerate(sentences)]
        if "context" in entry:
            canon["context"] = _coerce(where, _CONTEXT, entry["context"])
    else:
        if "sentences" in entry or "context" in entry:
            raise DataError(f"{where}: task translate reads 'pairs' of [source, target] and has no "
                            f"{'sentences' if 'sentences' in entry else 'context'}")
        pairs = entry.get("pairs")
        if not isinstance(pairs, list) or not pairs:
            raise DataError(f"{where}: 'pairs' must be a list of [source, target] sentences")
        out = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, list) or len(pair) != 2:
                raise DataError(f"{where}: pair {i + 1} must be [source, target], got {json.dumps(pair, ensure_ascii=False)[:60]}")
            out.append([_text_string(where, f"pair {i + 1} source", pair[0]), _text_string(where, f"pair {i + 1} target", pair[1])])
        canon["pairs"] = out
    count = sum(len(tokenize(t)) for t in canon.get("sentences", ())) + sum(len(tokenize(a)) + len(tokenize(b)) for a, b in canon.get("pairs", ()))
    if count > MAX_ELEMENTS:
        raise DataError(f"{where}: {count} words is too many (limit {MAX_ELEMENTS})")
    text = _text_data(where, canon)
    text.arrays()  # every word must be in the vocabulary: say which one is not, now
    return canon


def _text_data(where: str, canon: Mapping[str, Any]) -> TextData:
    return TextData(
        task=canon["task"], vocab=tuple(canon["vocab"]),
        **{k: canon.get(k, d) for k, d in _SPECIALS.items()},
        sentences=tuple(canon.get("sentences", ())), pairs=tuple((a, b) for a, b in canon.get("pairs", ())),
        context=canon.get("context"), where=where,
    )


def text_sets(spec: Mapping[str, Any]) -> dict[str, TextData]:
    """Every text set of a ``data`` section, keyed by the name of the entry that holds it."""
    spec = normalize(dict(spec or {}))
    return {name: _text_data(f"data {name!r}", e) for name, e in spec.items()
            if e.get("kind") == "text" and "same_as" not in e}


def text_for(spec: Mapping[str, Any], input_name: str | None = None) -> TextData:
    """The text set (its vocabulary) that feeds the Input named ``input_name``, or the file's
    only text set when no name is given. Raises :class:`DataError` when there is none."""
    spec = normalize(dict(spec or {}))
    sets = text_sets(spec)
    if input_name is not None and input_name in spec and spec[input_name].get("kind") == "text":
        entry = spec[input_name]
        return sets[entry.get("same_as", input_name)]
    if len(sets) == 1:
        return next(iter(sets.values()))
    if not sets:
        raise DataError("this file has no text data (a data entry with \"kind\": \"text\" and a vocabulary), so words cannot be turned into ids")
    raise DataError(f"this file has several text sets ({', '.join(sets)}); say which Input to use")


# --- validation ------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_values(where: str, values: Any) -> Any:
    """A number or rectangular nested lists of finite numbers; returned unchanged (deep-copied)."""
    def walk(v: Any, depth: int) -> Any:
        if depth > 32:
            raise DataError(f"{where}: 'values' is nested too deeply")
        if isinstance(v, list):
            return [walk(e, depth + 1) for e in v]
        if not _is_number(v):
            raise DataError(f"{where}: 'values' must hold numbers only, found {json.dumps(v, ensure_ascii=False)[:40]}")
        if isinstance(v, float) and not math.isfinite(v):
            raise DataError(f"{where}: 'values' must hold finite numbers only")
        return v

    out = walk(values, 0)
    try:
        arr = np.asarray(out, dtype=np.float64)
    except ValueError:
        raise DataError(f"{where}: 'values' is not rectangular (rows of different lengths)") from None
    if arr.size > MAX_ELEMENTS:
        raise DataError(f"{where}: 'values' has {arr.size} numbers; the limit is {MAX_ELEMENTS}")
    if arr.ndim and arr.shape[0] == 0:
        raise DataError(f"{where}: 'values' is empty")
    return out


def _coerce(where: str, param: Param, value: Any) -> Any:
    try:
        return param.coerce(where, value)
    except ParamError as exc:
        raise DataError(str(exc)) from None


_INLINE_KEYS = ("kind", "values")
_SYNTHETIC_KEYS = ("kind", "name", "field", "rows", "seed", "params")
_ROWS = Param("rows", ParamType.INT, 64, minimum=1, maximum=MAX_ROWS)
_SEED = Param("seed", ParamType.INT, 0, minimum=0, maximum=2**63 - 1)


def normalize(spec: Any) -> dict[str, Any]:
    """Check a ``data`` section and return it in canonical form (fixed key order, params in
    their canonical types). Idempotent; raises :class:`DataError` naming the entry and key."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise DataError(f"'data' must be an object mapping Input names to data, got {type(spec).__name__}")
    out: dict[str, Any] = {}
    for name, entry in spec.items():
        where = f"data {name!r}"
        if not isinstance(name, str) or not name:
            raise DataError("'data' keys must be the names of Input nodes")
        if not isinstance(entry, dict):
            raise DataError(f"{where} must be an object such as {{\"values\": [...]}}")
        kind = entry.get("kind", "inline" if "values" in entry else None)
        if kind == "inline":
            unknown = sorted(set(entry) - set(_INLINE_KEYS))
            if unknown:
                raise DataError(f"{where} has unknown key {unknown[0]!r} (inline data has: values)")
            if "values" not in entry:
                raise DataError(f"{where} has no 'values'")
            canon: dict[str, Any] = {"kind": "inline"} if "kind" in entry else {}
            canon["values"] = _check_values(where, entry["values"])
        elif kind == "synthetic":
            unknown = sorted(set(entry) - set(_SYNTHETIC_KEYS))
            if unknown:
                raise DataError(f"{where} has unknown key {unknown[0]!r} (synthetic data has: {', '.join(_SYNTHETIC_KEYS)})")
            gen = SYNTHETIC.get(entry.get("name"))  # type: ignore[arg-type]
            if gen is None:
                raise DataError(f"{where}: unknown synthetic set {entry.get('name')!r} (choose one of: {', '.join(SYNTHETIC)})")
            field = entry.get("field", "x")
            if field not in gen.fields:
                raise DataError(f"{where}: synthetic set {gen.name!r} has no field {field!r} (fields: {', '.join(gen.fields)})")
            canon = {"kind": "synthetic", "name": gen.name}
            if "field" in entry:
                canon["field"] = field
            if "rows" in entry:
                canon["rows"] = _coerce(where, _ROWS, entry["rows"])
            if "seed" in entry:
                canon["seed"] = _coerce(where, _SEED, entry["seed"])
            if "params" in entry:
                params = entry["params"]
                if not isinstance(params, dict):
                    raise DataError(f"{where}: 'params' must be an object")
                known = {p.name: p for p in gen.params}
                bad = sorted(set(params) - set(known))
                if bad:
                    raise DataError(
                        f"{where}: synthetic set {gen.name!r} has no parameter {bad[0]!r} (its parameters: {', '.join(known)})"
                    )
                canon["params"] = {k: _coerce(f"{where} ({gen.name})", known[k], v) for k, v in params.items()}
                full = {p.name: canon["params"].get(p.name, p.default) for p in gen.params}
                if gen.name == "blobs" and full["labels"] == "signed" and full["classes"] != 2:
                    raise DataError(f"{where}: signed labels (±1) need 2 classes; use \"labels\": \"ids\" for {full['classes']}")
                if gen.name == "linear" and full["weights"] is not None:
                    w = np.asarray(full["weights"], float)
                    if w.ndim > 1 or (w.ndim == 1 and w.size not in (1, full["features"])):
                        raise DataError(f"{where}: 'weights' must have {full['features']} numbers (one per feature)")
                if gen.name == "bars" and full["min_length"] > full["size"]:
                    raise DataError(f"{where}: 'min_length' ({full['min_length']}) must be ≤ 'size' ({full['size']})")
                per_row = {"bars": full.get("size", 1) ** 2, "recall": full.get("length", 1)}.get(gen.name, full.get("features", 2))
                size = canon.get("rows", 64) * per_row
                if size > MAX_ELEMENTS:
                    raise DataError(f"{where}: {size} numbers is too many for a synthetic set (limit {MAX_ELEMENTS})")
        elif kind == "text":
            canon = _normalize_text(where, entry)
        elif kind is None:
            raise DataError(f"{where} needs 'values' (inline data), \"kind\": \"synthetic\" or \"kind\": \"text\"")
        else:
            raise DataError(f"{where}: unknown kind {kind!r} (inline, synthetic or text)")
        out[name] = canon
    for name, canon in out.items():  # references between text entries, now that all are known
        if canon.get("kind") == "text" and "same_as" in canon:
            other = out.get(canon["same_as"])
            if other is None or other.get("kind") != "text" or "same_as" in other:
                raise DataError(f"data {name!r}: 'same_as' must name a data entry that holds the text itself "
                                f"(its vocab and sentences or pairs), got {canon['same_as']!r}")
            if canon["field"] not in TEXT_FIELDS[other["task"]]:
                raise DataError(f"data {name!r}: task {other['task']} has no field {canon['field']!r} "
                                f"(fields: {', '.join(TEXT_FIELDS[other['task']])})")
    return out


# --- binding to a graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One Input node and the array that feeds it."""

    node: str  # Input node id
    label: str
    array: np.ndarray  # (N, *shape[1:]) when batched, else exactly the Input's shape
    batched: bool


@dataclass(frozen=True)
class Dataset:
    """Data bound to a graph's Input nodes; hands out feeds keyed by node id."""

    bindings: tuple[Binding, ...]
    rows: int  # N (1 when nothing is batched)
    batch: int  # B

    @property
    def full_batch(self) -> bool:
        return self.batch == self.rows

    def _take(self, idx: np.ndarray | slice) -> dict[str, np.ndarray]:
        return {b.node: (b.array[idx] if b.batched else b.array) for b in self.bindings}

    def batch_feeds(self, step: int, seed: int) -> dict[str, np.ndarray]:
        """The feeds for training step ``step`` (0-based): all rows, or B rows drawn without
        replacement by a generator seeded with ``(seed, step)``."""
        if self.full_batch:
            return self._take(slice(None))
        rng = np.random.default_rng([int(seed), int(step)])
        return self._take(rng.choice(self.rows, size=self.batch, replace=False))

    def eval_feeds(self) -> list[dict[str, np.ndarray]]:
        """Consecutive batches ``rows[0:B], rows[B:2B], …`` (a last partial batch is left out)."""
        return [self._take(slice(i, i + self.batch)) for i in range(0, self.rows - self.batch + 1, self.batch)]

    def first_feeds(self) -> dict[str, np.ndarray]:
        """The first batch, for a single forward/backward pass (``run``, ``gradcheck``)."""
        return self._take(slice(0, self.batch))


def bind(spec: Mapping[str, Any], graph: Any) -> Dataset:
    """Bind a (normalized or raw) ``data`` section to ``graph``'s Input nodes.

    Raises :class:`DataError` naming the Input or data entry: an Input without data, data for
    a node that is not an Input, rows that do not fit the Input's shape, data sets of different
    lengths, a batch larger than the data, non-integer token ids."""
    spec = normalize(dict(spec))
    inputs = [n for n in graph.nodes.values() if n.type == "Input"]
    by_node: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for name, entry in spec.items():
        try:
            node = graph.find(name)
        except GraphError:
            names = ", ".join(repr(n.name) for n in inputs) or "none"
            raise DataError(f"data {name!r} has no Input node of that name to feed (Input nodes: {names})") from None
        if node.type != "Input":
            raise DataError(f"data {name!r} names {node.label}, a {node.type} block; data can only feed Input nodes")
        if node.id in by_node:
            raise DataError(f"data {by_node[node.id][0]!r} and {name!r} both feed Input {node.label}")
        by_node[node.id] = (name, entry)
    cache: dict[str, dict[str, np.ndarray]] = {}
    bindings: list[Binding] = []
    batched: list[tuple[Binding, int]] = []  # with the Input's batch size
    for node in inputs:
        if node.id not in by_node:
            raise DataError(f"Input {node.label} has no data: add an entry named {node.name!r} under \"data\"")
        name, entry = by_node[node.id]
        if entry.get("kind", "inline") == "inline":
            array = np.asarray(entry["values"])
            array = array.astype(np.int64 if np.issubdtype(array.dtype, np.integer) else np.float64)
        elif entry["kind"] == "text":
            home = entry.get("same_as", name)
            key = "text:" + home
            if key not in cache:
                cache[key] = _text_data(f"data {home!r}", spec[home]).arrays()
            array = cache[key][entry["field"]]
        else:
            key = json.dumps({k: v for k, v in entry.items() if k != "field"}, sort_keys=True)
            if key not in cache:
                cache[key] = _generate(entry)
            array = cache[key][entry.get("field", "x")]
        shape = tuple(node.params["shape"])
        if node.params.get("dtype") == "ids":
            if not np.issubdtype(array.dtype, np.integer):
                if not np.all(array == np.round(array)):
                    raise DataError(f"Input {node.label} takes token ids (whole numbers), but data {name!r} has fractions")
                array = array.astype(np.int64)
        if shape == ():
            if array.size != 1:
                raise DataError(f"Input {node.label} has shape () (one number), but data {name!r} has shape {shape_str(array.shape)}")
            bindings.append(Binding(node.id, node.label, array.reshape(()), False))
            continue
        if array.ndim == 0:
            raise DataError(f"data {name!r} is a single number, but Input {node.label} takes rows of shape {shape_str(shape[1:])}")
        rows = array.shape[0]
        row_size = int(np.prod(shape[1:], dtype=np.int64))
        if array.size != rows * row_size:
            raise DataError(
                f"data {name!r} has rows of shape {shape_str(array.shape[1:])}, but Input {node.label} takes rows of "
                f"shape {shape_str(shape[1:])} (its shape {shape_str(shape)} without the batch dimension)"
            )
        if shape[0] > rows:
            raise DataError(
                f"Input {node.label} takes batches of {shape[0]} rows (its shape {shape_str(shape)}), "
                f"but data {name!r} has only {rows} rows"
            )
        b = Binding(node.id, node.label, np.ascontiguousarray(array.reshape((rows, *shape[1:]))), True)
        bindings.append(b)
        batched.append((b, shape[0]))
    if not batched:
        return Dataset(tuple(bindings), 1, 1)
    first, batch = batched[0]
    for b, size in batched[1:]:
        if b.array.shape[0] != first.array.shape[0]:
            raise DataError(
                f"the data for Input {first.label} has {first.array.shape[0]} rows, but the data for "
                f"Input {b.label} has {b.array.shape[0]}; rows must line up"
            )
        if size != batch:
            raise DataError(
                f"Input {first.label} takes batches of {batch} rows but Input {b.label} takes {size}; "
                f"the first dimension of every Input's shape must agree"
            )
    return Dataset(tuple(bindings), first.array.shape[0], batch)

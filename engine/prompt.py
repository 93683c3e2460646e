"""Trying what a language model or a translator learned: words in, words out, with each new
word's probability. Common ground of ``backprop-studio generate`` and the editor's Try panel.

- :func:`pick_model` finds the node that generates (a SequenceToSequence, a LanguageModel, or a
  GenerateToken at the end of a language model built from blocks), :func:`model_text` the
  vocabulary that feeds it (the file's text data, the one the trainer used).
- :class:`Prompter` reads a prompt word by word (:meth:`Prompter.words` marks each unknown word
  with the vocabulary's nearest spellings instead of failing) and answers it
  (:meth:`Prompter.answer`): the generated words, each with the probability the model gave it and
  its strongest alternatives, greedy or sampled with a temperature and a seed, exactly as
  :func:`engine.generate.generate` and :func:`engine.generate.translate` choose them.

The probability shown for a word is softmax(scores / T)[word] at the temperature T it was drawn
with (softmax(scores) when greedy): the chance the model gave it at that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import data as data_mod
from engine.errors import GraphError

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from engine.serialize import Project
    from engine.warmup import Plan, Progress

LM_TYPES = ("LanguageModel", "GenerateToken")
S2S_TYPES = ("SequenceToSequence",)
ALTERNATIVES = 5


def pick_model(graph: Any, node: str | None = None, flag: str = "node") -> Any:
    """The node that generates: ``node`` if given, else the graph's only SequenceToSequence, else
    its only LanguageModel, else its only GenerateToken. ``flag`` is how the caller names the
    choice in messages (``--node`` on the command line). Raises :class:`GraphError`."""
    if node is not None:
        found = graph.find(node)
        if found.type not in LM_TYPES + S2S_TYPES:
            raise GraphError(f"{flag} {node}: {found.label} is a {found.type}; generation needs a LanguageModel, "
                             f"a GenerateToken or a SequenceToSequence")
        return found
    for types in (S2S_TYPES, ("LanguageModel",), ("GenerateToken",)):
        found = [n for n in graph.nodes.values() if n.type in types]
        if len(found) > 1:
            raise GraphError(f"this graph has several {types[0]} nodes ({', '.join(n.label for n in found)}); "
                             f"say which one with {flag} NAME")
        if found:
            return found[0]
    raise GraphError("this graph has nothing to generate with: it needs a LanguageModel, a GenerateToken "
                     "(a language model built from blocks) or a SequenceToSequence")


def model_text(project: "Project", model: Any) -> data_mod.TextData:
    """The text set (vocabulary) of the token-id Input that feeds ``model``."""
    import networkx as nx

    graph = project.graph
    ancestors = nx.ancestors(graph.to_networkx(), model.id)
    names = [graph.nodes[n].name for n in sorted(ancestors)
             if graph.nodes[n].type == "Input" and graph.nodes[n].params.get("dtype") == "ids"]
    sets = data_mod.text_sets(project.data)
    spec = data_mod.normalize(project.data)
    for name in names:
        entry = spec.get(name)
        if entry is not None and entry.get("kind") == "text":
            return sets[entry.get("same_as", name)]
    return data_mod.text_for(spec)


def context_of(graph: Any, model: Any) -> int | None:
    """How many tokens the language model reads at most (learned positions have max_len rows)."""
    if model.type == "LanguageModel":
        return int(model.params["max_len"]) if model.params.get("model", "transformer") == "transformer" else None
    limits = [int(n.params.get("max_len", 512)) for n in graph.nodes.values()
              if n.type == "EmbedToken" and n.params.get("position") == "learned"]
    return min(limits) if limits else None


def plan_kernels(runtime: "Runtime", max_tokens: int, progress: "Progress | None" = None) -> "Plan":
    """The kernel backend for generating up to ``max_tokens`` tokens with ``runtime`` (one pass
    per token): what ``generate`` runs on, and the Try panel too."""
    from engine import warmup

    return warmup.ready(runtime, max(1, max_tokens), None, None, progress)


@dataclass(frozen=True)
class PromptWord:
    """One word of a prompt: whether the vocabulary knows it, and if not the nearest words."""

    text: str
    known: bool
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Token:
    """One generated token: its id, its word, the probability the model gave it, and the
    strongest alternatives (word, probability), best first (the chosen word included)."""

    id: int
    word: str
    probability: float
    alternatives: tuple[tuple[str, float], ...] = ()
    end: bool = False  # the end-of-sentence token (generation stopped here)


@dataclass(frozen=True)
class Answer:
    """What the model made of a prompt."""

    task: str  # "next_token" | "translate"
    prompt: tuple[PromptWord, ...]
    tokens: tuple[Token, ...]  # the end token last, when generation ended with it
    stopped: str  # "eos" | "max_tokens"

    @property
    def words(self) -> list[str]:
        """The generated words (the end token left out)."""
        return [t.word for t in self.tokens if not t.end]

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Prompter:
    """Prompts a project's language model or translator (see the module docstring). Raises
    :class:`GraphError` or :class:`~engine.data.DataError` when the project has none, or no
    vocabulary for it."""

    def __init__(self, project: "Project", node: str | None = None, flag: str = "node") -> None:
        self.project = project
        self.model = pick_model(project.graph, node, flag)
        self.text = model_text(project, self.model)
        self.translating = self.model.type in S2S_TYPES
        if self.translating != (self.text.task == "translate"):
            raise GraphError(f"{self.model.label} is a {self.model.type}, but the text data is for the task {self.text.task}")

    @property
    def task(self) -> str:
        return self.text.task

    def words(self, prompt: str) -> list[PromptWord]:
        """The prompt's words, each marked known or unknown (with the nearest known words)."""
        index = self.text.index
        return [PromptWord(w, True) if w in index else PromptWord(w, False, tuple(self.text.nearest(w)))
                for w in data_mod.tokenize(prompt)]

    def encode(self, prompt: str) -> list[int]:
        """The ids the model reads for ``prompt`` (as in training); DataError for an unknown word."""
        return self.text.encode_source(prompt) if self.translating else self.text.encode_prompt(prompt)

    def answer(self, runtime: "Runtime", prompt: str, *, max_tokens: int = 20, temperature: float = 0.0,
               seed: int = 0) -> Answer:
        """Generate (or translate) from ``prompt`` with ``runtime``'s weights; see the module
        docstring for the probabilities. Unknown words raise DataError (check :meth:`words`)."""
        from engine.generate import generate, translate

        ids = self.encode(prompt)
        text = self.text
        picked: list[tuple[int, np.ndarray]] = []

        def keep(token: int, logits: np.ndarray) -> None:
            picked.append((token, np.array(logits, dtype=np.float64).reshape(-1)))

        if self.translating:
            if text.bos is None or text.eos is None:
                raise GraphError("translation needs bos and eos tokens in the text data (the decoder starts from bos and stops at eos)")
            new = translate(runtime, ids, bos=text.bos_id, eos=text.eos_id, max_len=max_tokens,  # type: ignore[arg-type]
                            temperature=temperature, seed=seed, node=self.model.id, on_token=keep)
        else:
            new = generate(runtime, ids, max_new_tokens=max_tokens, temperature=temperature, eos=text.eos_id,
                           seed=seed, node=self.model.id, on_token=keep)
        tokens = []
        for token, logits in picked:
            scaled = logits / temperature if temperature > 0 else logits
            p = np.exp(scaled - scaled.max())
            p /= p.sum()
            best = np.argsort(-p, kind="stable")[:ALTERNATIVES]
            alternatives = tuple((text.decode([int(i)])[0], float(p[i])) for i in best)
            tokens.append(Token(token, text.decode([token])[0], float(p[token]), alternatives,
                                end=token == text.eos_id))
        stopped = "eos" if tokens and tokens[-1].end else "max_tokens"
        del new  # the same ids as the tokens that are not the end
        return Answer(text.task, tuple(self.words(prompt)), tuple(tokens), stopped)


__all__ = ["Answer", "Prompter", "PromptWord", "Token", "context_of", "model_text", "pick_model", "plan_kernels"]

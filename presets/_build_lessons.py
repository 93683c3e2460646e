"""Writes the sequence-model and image lessons (language_model, seq2seq, bert, rnn_vs_lstm,
convnet) into presets/ in the ordinary file format. The JSON files are what ships; this script
is how they were made, so that a change to a lesson is a change here plus a re-run::

    python -m presets._build_lessons            # all of them
    python -m presets._build_lessons seq2seq    # one

Node ids are UUID5s of ``preset/<lesson>/<node name>``, so re-running gives the same files.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from engine import serialize
from engine.graph import Graph
from engine.serialize import Project

HERE = Path(__file__).resolve().parent
STEP = 190.0  # horizontal distance between columns of nodes


class _Builder:
    def __init__(self, lesson: str) -> None:
        self.lesson = lesson
        self.graph = Graph()

    def node(self, name: str, type_id: str, column: float, row: float = 0.0, **params: Any) -> str:
        node_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"preset/{self.lesson}/{name}"))
        self.graph.add_node(type_id, params, node_id=node_id, name=name, position=(column * STEP, row * 110.0))
        return node_id

    def link(self, src: str, dst: str, dst_port: str, src_port: str = "out") -> None:
        self.graph.connect(src, src_port, dst, dst_port)


# --- language model ------------------------------------------------------------------------------

LM_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "the lazy dog sleeps in the sun",
    "a quick brown dog runs to the fox",
    "the cat sleeps on the mat",
    "a brown cat jumps over the dog",
]
LM_CONTEXT = 4


def _vocab(sentences: list[str]) -> list[str]:
    words: list[str] = []
    for s in sentences:
        for w in s.split():
            if w not in words:
                words.append(w)
    return ["<pad>", "<bos>", "<eos>", *words]


def language_model() -> Project:
    vocab = _vocab(LM_SENTENCES)
    rows = sum(len(s.split()) + 1 for s in LM_SENTENCES)
    b = _Builder("language_model")
    ctx = b.node("context", "Input", 0, 0, shape=[rows, LM_CONTEXT], dtype="ids")
    emb = b.node("EmbedToken", "EmbedToken", 1, 0, vocab=len(vocab), dim=32, position="learned", max_len=LM_CONTEXT)
    seq = b.node("SequenceModel", "TransformerBlock", 2, 0, dim=32, heads=4, hidden=64, causal=True)
    col = b.node("Collapse", "Collapse", 3, 0, mode="last")
    gen = b.node("GenerateToken", "GenerateToken", 4, 0, vocab=len(vocab), temperature=0.0)
    nxt = b.node("next word", "Input", 4, 1, shape=[rows], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 5, 0.5, ignore_index=0)
    b.link(ctx, emb, "ids")
    b.link(emb, seq, "x")
    b.link(seq, col, "x")
    b.link(col, gen, "x")
    b.link(gen, loss, "logits", "logits")
    b.link(nxt, loss, "target")
    description = (
        "A language model, built exactly as the taught formula reads: next-word scores = "
        "GenerateToken(Collapse(SequenceModel(EmbedToken(x)))). The input x is a window of the last "
        f"{LM_CONTEXT} words (ids from the vocabulary stored with the data; <bos> marks the start of a "
        "sentence and <pad> fills a window that reaches before it). EmbedToken turns each id into a vector "
        "of 32 numbers and adds a learned vector for its position; the SequenceModel, a causal "
        "TransformerBlock, lets every position look at the positions before it (attention) and then "
        "transforms each vector (FeedForward), with AddNorm around both; Collapse keeps the vector of the "
        "last position, which has seen the whole window; GenerateToken scores every word y of the "
        "vocabulary by x·E[y] + b. CrossEntropy compares the scores with the word that really came next. "
        f"The data are {len(LM_SENTENCES)} short sentences, cut into {rows} (window, next word) examples. "
        "Train it, then ask it to continue a prompt: `backprop-studio generate language_model --prompt "
        "\"the quick brown\"` prints \"fox jumps over the lazy dog\" (the .json holds no weights, so the "
        "command trains first; `backprop-studio train language_model -o lm.bps` then `backprop-studio "
        "generate lm.bps --prompt ...` trains once). Note that \"quick brown\" is followed by fox after "
        "\"the\" but by dog after \"a\": the model must use the whole window, not just the last word."
    )
    return Project(
        graph=b.graph, name="Language model: the quick brown …", description=description,
        data={
            "context": {"kind": "text", "field": "ids", "task": "next_token", "vocab": vocab, "bos": "<bos>",
                        "eos": "<eos>", "pad": "<pad>", "sentences": LM_SENTENCES, "context": LM_CONTEXT},
            "next word": {"kind": "text", "field": "target", "same_as": "context"},
        },
        training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.01}, "steps": 300, "seed": 0,
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9}},
    )


# --- sequence to sequence ----------------------------------------------------------------------

S2S_PAIRS = [
    ["la maison bleue", "the blue house"],
    ["la maison rouge", "the red house"],
    ["la voiture bleue", "the blue car"],
    ["la voiture rouge", "the red car"],
    ["le chat noir", "the black cat"],
    ["le chien noir", "the black dog"],
    ["le chat blanc", "the white cat"],
    ["le chien blanc", "the white dog"],
    ["la maison blanche", "the white house"],
    ["la voiture noire", "the black car"],
]


def seq2seq() -> Project:
    vocab = _vocab([w for pair in S2S_PAIRS for w in pair])
    rows = len(S2S_PAIRS)
    ls = max(len(a.split()) for a, _ in S2S_PAIRS)
    lt = max(len(t.split()) for _, t in S2S_PAIRS) + 1
    b = _Builder("seq2seq")
    src = b.node("source", "Input", 0, 0, shape=[rows, ls], dtype="ids")
    tgt = b.node("target so far", "Input", 1, 1, shape=[rows, lt], dtype="ids")
    model = b.node("translator", "SequenceToSequence", 2, 0.5, src_vocab=len(vocab), tgt_vocab=len(vocab), dim=32,
                   model="transformer", layers=1, heads=4, hidden=64, max_len=8)
    nxt = b.node("next target word", "Input", 2, 1.5, shape=[rows, lt], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 3, 1, ignore_index=0)
    b.link(src, model, "src")
    b.link(tgt, model, "tgt")
    b.link(model, loss, "logits")
    b.link(nxt, loss, "target")
    description = (
        "Translation with an encoder–decoder (SequenceToSequence, transformer). The encoder reads the "
        "French source (EmbedToken with learned positions, then a TransformerBlock in which every word "
        "attends to every other word). The decoder reads the English target shifted right, <bos> first "
        "(\"target so far\"), through a TransformerDecoderBlock: causal self-attention over the words "
        "produced so far, then cross-attention to the encoder's vectors (where the word order is sorted "
        "out: \"maison bleue\" becomes \"blue house\"), then a FeedForward. GenerateToken scores the next "
        "target word at every position, and CrossEntropy compares the scores with the real next words "
        "(\"next target word\", which ends with <eos>; <pad> fills the short sentences and is ignored, "
        "ignore_index 0). To translate, the decoder starts from <bos> and appends its best word until it "
        "says <eos>: `backprop-studio generate seq2seq --prompt \"la maison bleue\"` prints \"the blue "
        f"house\". The data are {rows} French/English pairs with a vocabulary of {len(vocab)} words (both "
        "languages share it). Try \"la voiture blanche\", which is not in the data."
    )
    return Project(
        graph=b.graph, name="Sequence to sequence: la maison bleue → the blue house", description=description,
        data={
            "source": {"kind": "text", "field": "src", "task": "translate", "vocab": vocab, "bos": "<bos>", "eos": "<eos>",
                       "pad": "<pad>", "pairs": S2S_PAIRS},
            "target so far": {"kind": "text", "field": "tgt", "same_as": "source"},
            "next target word": {"kind": "text", "field": "target", "same_as": "source"},
        },
        training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.01}, "steps": 200, "seed": 0,
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9}},
    )


LESSONS: dict[str, Callable[[], Project]] = {
    "language_model": language_model,
    "seq2seq": seq2seq,
}


def main(argv: list[str]) -> int:
    for name in argv or list(LESSONS):
        project = LESSONS[name]()
        serialize.save(project, HERE / f"{name}.json")
        print(f"wrote presets/{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

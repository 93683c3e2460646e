"""Writes the sequence-model and image lessons (language_model, seq2seq, bert, rnn_vs_lstm,
convnet) into presets/ in the ordinary file format. The JSON files are what ships; this script
is how they were made, so that a change to a lesson is a change here plus a re-run::

    python -m presets._build_lessons            # all of them
    python -m presets._build_lessons seq2seq    # one

Node ids are UUID5s of ``preset/<lesson>/<node name>``, so re-running gives the same files.

Every lesson's text has the form :func:`lesson_text` writes (the idea, **What to do** in the
window, **What to look for**, an optional command); the lecture's three lessons
(linear_regression, hinge_loss, two_layer_net) are JSON written by hand in the same form.
tests/editor/test_lesson_texts.py checks that form and that every control a text names exists.
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


def lesson_text(about: str, do: list[str], look: list[str], terminal: str = "") -> str:
    """A lesson's description in the Markdown the lesson panel shows: what it is about, a
    numbered **What to do** the student follows in the window (controls in bold, exactly as the
    window labels them, keys in brackets; node names in italics), **What to look for**, and an
    optional command for the terminal (never the only way). ``$…$`` keeps a formula whole."""
    parts = [about, "#### What to do", "\n".join(f"{i}. {step}" for i, step in enumerate(do, 1)),
             "#### What to look for", "\n".join(f"- {item}" for item in look)]
    if terminal:
        parts.append(f"*From the terminal (optional):* {terminal}")
    return "\n\n".join(parts)


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
    pad = b.node("padding mask", "PaddingMask", 1, 1, pad_id=vocab.index("<pad>"))
    seq = b.node("SequenceModel", "TransformerBlock", 2, 0, dim=32, heads=4, hidden=64, causal=True)
    col = b.node("Collapse", "Collapse", 3, 0, mode="last")
    gen = b.node("GenerateToken", "GenerateToken", 4, 0, vocab=len(vocab), temperature=0.0)
    nxt = b.node("next word", "Input", 4, 1, shape=[rows], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 5, 0.5, ignore_index=0)
    b.link(ctx, emb, "ids")
    b.link(ctx, pad, "ids")
    b.link(emb, seq, "x")
    b.link(pad, seq, "mask")
    b.link(seq, col, "x")
    b.link(col, gen, "x")
    b.link(gen, loss, "logits", "logits")
    b.link(nxt, loss, "target")
    description = lesson_text(
        "A language model, built as the lecture's formula reads: the last "
        f"{LM_CONTEXT} words x → EmbedToken → SequenceModel (a causal TransformerBlock) → Collapse (the "
        "last position) → GenerateToken, which scores every word y by $x·E[y] + b$. CrossEntropy "
        f"compares the scores with the word that came next, in {rows} windows cut from "
        f"{len(LM_SENTENCES)} sentences.",
        ["Press **Train** (Ctrl+T) and watch the loss and the perplexity.",
         "Open the **Try Panel** (Train menu), type \"the quick brown\" and press **Generate**; then try "
         "\"a quick brown\", and a word it has never seen.",
         "Double-click *SequenceModel*, press **Forward** (F5) and click *attn*: the **Values** panel "
         "shows each head's attention weights. **Back to Outer Graph** (Alt+Left) returns."],
        ["The perplexity falls from about 20 (a blind guess) to about 1.2.",
         "\"the quick brown\" goes on \"fox jumps over the lazy dog\", \"a quick brown\" \"dog runs to "
         "the fox\": the model reads the whole window.",
         "The bar under each word is its probability; an unknown word is marked, with the nearest known "
         "words to pick.",
         "Attention is causal: each word looks only at itself and the words before it, never at <pad>."],
        "`backprop-studio generate language_model --prompt \"the quick brown\"`",
    )
    return Project(
        graph=b.graph, name="Language model: the quick brown …", description=description,
        data={
            "context": {"kind": "text", "field": "ids", "task": "next_token", "vocab": vocab, "bos": "<bos>",
                        "eos": "<eos>", "pad": "<pad>", "sentences": LM_SENTENCES, "context": LM_CONTEXT},
            "next word": {"kind": "text", "field": "target", "same_as": "context"},
        },
        training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.01}, "steps": 300, "seed": 0,
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9},
                  "metric": {"kind": "perplexity"}},
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
    ["la maison", "the house"],
    ["le chat", "the cat"],
    ["la voiture", "the car"],
    ["le chien", "the dog"],
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
                   model="transformer", layers=1, heads=4, hidden=64, max_len=8, pad_id=vocab.index("<pad>"))
    nxt = b.node("next target word", "Input", 2, 1.5, shape=[rows, lt], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 3, 1, ignore_index=0)
    b.link(src, model, "src")
    b.link(tgt, model, "tgt")
    b.link(model, loss, "logits")
    b.link(nxt, loss, "target")
    description = lesson_text(
        "Translation with an encoder–decoder (SequenceToSequence). The encoder reads the French sentence, "
        "each word attending to every other; the decoder writes the English one word at a time, attending "
        "to what it has written and, by cross-attention, to the encoder: there \"maison bleue\" becomes "
        f"\"blue house\". The data are {rows} pairs, {len(vocab)} words.",
        ["Press **Train** (Ctrl+T) and watch the loss and the exact match.",
         "Open the **Try Panel** (Train menu), type \"la maison bleue\" and press **Translate**; then try "
         "\"la voiture blanche\", which is not among the pairs.",
         "Double-click *translator* to see the encoder *enc1*, the decoder *dec1* and the padding masks. "
         "**Back to Outer Graph** (Alt+Left) returns."],
        ["The exact match (whole sentences right) reaches 100 %.",
         "\"the blue house\", and \"the white car\" for the pair it never saw: the adjective moves in "
         "front of the noun.",
         "The decoder starts from <bos> and stops when it says <eos> (⏎ end).",
         "<pad> fills the short sentences; the masks hide it from every attention."],
        "`backprop-studio generate seq2seq --prompt \"la maison bleue\"`",
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
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9},
                  "metric": {"kind": "exact_match"}},
    )


# --- RNN vs LSTM ---------------------------------------------------------------------------------

RECALL = {"length": 40, "symbols": 8, "distractors": 0}
RECALL_ROWS, RECALL_BATCH = 2048, 32


def rnn_vs_lstm() -> Project:
    b = _Builder("rnn_vs_lstm")
    vocab = RECALL["symbols"] + RECALL["distractors"]
    seq = b.node("sequence", "Input", 0, 1, shape=[RECALL_BATCH, RECALL["length"]], dtype="ids")
    first = b.node("first token", "Input", 3, 1, shape=[RECALL_BATCH], dtype="ids")
    losses = []
    for row, (cell, short) in enumerate((("SimpleRNN", "RNN"), ("LSTM", "LSTM"))):
        r = 2.0 * row
        emb = b.node(f"embed ({short})", "EmbedToken", 1, r, vocab=vocab, dim=8)
        rnn = b.node(short if short == "LSTM" else "SimpleRNN", "SequenceRNN", 2, r, cell=cell, hidden=32)
        lin = b.node(f"scores ({short})", "Linear", 3, r, out_features=RECALL["symbols"])
        loss = b.node(f"{short} loss", "CrossEntropy", 4, r)
        b.link(seq, emb, "ids")
        b.link(emb, rnn, "x")
        b.link(rnn, lin, "x", "last")
        b.link(lin, loss, "logits")
        b.link(first, loss, "target")
        losses.append(loss)
    total = b.node("total loss", "Add", 5, 1)
    b.link(losses[0], total, "a")
    b.link(losses[1], total, "b")
    length = RECALL["length"]
    description = lesson_text(
        f"Long memory: which of {RECALL['symbols']} symbols came FIRST in a sequence of {length}? A "
        "SimpleRNN, $h_t = tanh(x_t Wx + h_(t−1) Wh + b)$, and an LSTM, whose cell state "
        "$c_t = f⊙c_(t−1) + i⊙g$ is carried forward by a forget gate f, read the same sequences side by "
        "side; training minimises the sum of their losses.",
        ["Press **Backward** (F6) and read the two losses on the wires into *total loss*.",
         "Click *SimpleRNN*, then Ctrl+click *LSTM*: the **Values** panel draws $‖∂loss/∂h_t‖$ over the "
         f"{length} steps for both.",
         "Press **Train** (Ctrl+T): 1500 steps of Adam, a few minutes. The curve is the total loss, the "
         "accuracy the LSTM's.",
         "Press **Backward** (F6) again and compare the two losses."],
        ["Before training both losses are near ln 8 ≈ 2.08, a guess among 8.",
         "The SimpleRNN's gradient shrinks at every step back in time (times Whᵀ and tanh's slope): the "
         "first token, the only one that matters, gets almost none. The LSTM's reaches back along its "
         "cell state.",
         "After training the LSTM's loss is close to 0 (accuracy near 100 %); the SimpleRNN's stays far "
         "above."],
        "`backprop-studio train rnn_vs_lstm`",
    )
    spec = {"kind": "synthetic", "name": "recall", "rows": RECALL_ROWS, "seed": 0, "params": dict(RECALL)}
    return Project(
        graph=b.graph, name="RNN vs LSTM: remembering the first token", description=description,
        data={"sequence": {**spec, "field": "x"}, "first token": {**spec, "field": "y"}},
        training={"loss": "total loss", "optimizer": {"type": "adam", "lr": 0.005}, "steps": 1500, "clip": 1.0,
                  "seed": 0, "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9, "node": "LSTM loss"},
                  "metric": {"kind": "accuracy", "node": "LSTM loss"}},
    )

# --- ConvNet --------------------------------------------------------------------------------------

BARS = {"size": 8, "min_length": 3, "noise": 0.3}
BARS_ROWS, BARS_BATCH = 256, 32
CONVNET_DROPOUT = 0.2


def convnet() -> Project:
    b = _Builder("convnet")
    size = BARS["size"]
    img = b.node("image", "Input", 0, 0, shape=[BARS_BATCH, 1, size, size], dtype="float")
    net = b.node("ConvNet", "ConvNet", 1, 0, stages=2, channels=[4, 8], classes=2, kernel=3, hidden=16, batchnorm=True,
                 dropout=CONVNET_DROPOUT)
    label = b.node("label", "Input", 2, 1, shape=[BARS_BATCH], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 3, 0.5)
    b.link(img, net, "x")
    b.link(net, loss, "logits")
    b.link(label, loss, "target")
    description = lesson_text(
        f"A convolutional network tells horizontal bars from vertical ones in {size}×{size} noisy images. "
        "Inside *ConvNet*, two stages of Conv2d → BatchNorm → ReLU → MaxPool2d: a Conv2d slides 3×3 filters "
        "over the image (the same weights everywhere), a MaxPool2d keeps the strongest response of each "
        f"2×2 window (8 → 4 → 2). Flatten, dropout {CONVNET_DROPOUT} and a FeedForward score the two classes.",
        ["Double-click *ConvNet* and press **Backward** (F6).",
         "Click the wire from *relu1* to *pool1*, then its **Gradient** tab and **Heatmap**.",
         "Click *conv1*: the **Values** panel shows its 4 filters and their gradients.",
         "Press **Train** (Ctrl+T); with *conv1* selected, the **Weights** tab shows its filters before "
         "and after.",
         "**Back to Outer Graph** (Alt+Left), click *ConvNet*, turn off batchnorm and set dropout to 0 in "
         "the **Inspector**, and **Train** (Ctrl+T) again."],
        ["MaxPool2d sends each gradient to the pixel that won its window: in each 2×2 square at most one "
         "pixel gets one.",
         "The loss falls by more than 90 % and the accuracy reaches 100 %. What do the trained filters "
         "respond to?",
         "BatchNorm (rescaling each channel over the batch) and dropout act only while training."],
        "`backprop-studio train convnet`",
    )
    spec = {"kind": "synthetic", "name": "bars", "rows": BARS_ROWS, "seed": 0, "params": dict(BARS)}
    return Project(
        graph=b.graph, name="ConvNet: horizontal or vertical bars", description=description,
        data={"image": {**spec, "field": "x"}, "label": {**spec, "field": "y"}},
        training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.01}, "steps": 300, "seed": 0,
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9},
                  "metric": {"kind": "accuracy"}},
    )


# --- BERT -----------------------------------------------------------------------------------------

BERT_DATA = {"length": 8, "symbols": 4, "distractors": 4}
BERT_ROWS, BERT_BATCH = 128, 16


def bert() -> Project:
    b = _Builder("bert")
    vocab = BERT_DATA["symbols"] + BERT_DATA["distractors"]
    ids = b.node("tokens", "Input", 0, 0, shape=[BERT_BATCH, BERT_DATA["length"]], dtype="ids")
    enc = b.node("BERT", "BERT", 1, 0, vocab=vocab, dim=32, heads=4, layers=24, hidden=64, max_len=BERT_DATA["length"])
    col = b.node("Collapse", "Collapse", 2, 0, mode="mean")
    lin = b.node("scores", "Linear", 3, 0, out_features=BERT_DATA["symbols"])
    label = b.node("first token", "Input", 3, 1, shape=[BERT_BATCH], dtype="ids")
    loss = b.node("loss", "CrossEntropy", 4, 0.5)
    b.link(ids, enc, "ids")
    b.link(enc, col, "x")
    b.link(col, lin, "x")
    b.link(lin, loss, "logits")
    b.link(label, loss, "target")
    n = BERT_DATA["length"]
    description = lesson_text(
        "BERT as in the lecture: $BERT(x) = TransformerBlock²⁴(EmbedToken(x))$, 24 Transformer blocks on "
        "an embedding, narrow here (32 numbers per token, 4 heads) to train on a laptop. It must say which "
        f"of {BERT_DATA['symbols']} symbols came first in {n} tokens, seeing the whole sequence both ways: "
        "BERT encodes, it does not generate.",
        ["Double-click *BERT*: the embedding, then the 24 blocks drawn as one stack (*block1* … *block24*).",
         "Press **Backward** (F6) and read the bars under the stack: the gradient's norm at each block.",
         "Double-click the stack to show every block, then *block1* to see Attention → AddNorm → "
         "FeedForward → AddNorm. **Back to Outer Graph** (Alt+Left) returns.",
         "Press **Train** (Ctrl+T): 100 steps of Adam, about half a minute."],
        ["The gradient does not fade through 48 sublayers: at block1 it is no smaller than at block24, "
         "because every AddNorm carries the signal and its gradient around its sublayer.",
         "The loss falls by more than 90 %; the accuracy climbs from about 25 % (a guess among 4) to 100 %."],
        "`backprop-studio train bert`",
    )
    spec = {"kind": "synthetic", "name": "recall", "rows": BERT_ROWS, "seed": 0, "params": dict(BERT_DATA)}
    return Project(
        graph=b.graph, name="BERT: 24 Transformer blocks", description=description,
        data={"tokens": {**spec, "field": "x"}, "first token": {**spec, "field": "y"}},
        training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.001}, "steps": 100, "seed": 0,
                  "dtype": "float32", "target": {"metric": "loss_drop", "value": 0.9},
                  "metric": {"kind": "accuracy"}},
    )


LESSONS: dict[str, Callable[[], Project]] = {
    "bert": bert,
    "convnet": convnet,
    "rnn_vs_lstm": rnn_vs_lstm,
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

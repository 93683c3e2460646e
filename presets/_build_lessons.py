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
    description = (
        "A language model, built exactly as the taught formula reads: next-word scores = "
        "GenerateToken(Collapse(SequenceModel(EmbedToken(x)))). The input x is a window of the last "
        f"{LM_CONTEXT} words (ids from the vocabulary stored with the data; <bos> marks the start of a "
        "sentence and <pad> fills a window that reaches before it; the padding mask marks those <pad>s so "
        "that attention ignores them, as if the window were simply shorter). EmbedToken turns each id into a vector "
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
    description = (
        "Translation with an encoder–decoder (SequenceToSequence, transformer). The encoder reads the "
        "French source (EmbedToken with learned positions, then a TransformerBlock in which every word "
        "attends to every other word). The decoder reads the English target shifted right, <bos> first "
        "(\"target so far\"), through a TransformerDecoderBlock: causal self-attention over the words "
        "produced so far, then cross-attention to the encoder's vectors (where the word order is sorted "
        "out: \"maison bleue\" becomes \"blue house\"), then a FeedForward. GenerateToken scores the next "
        "target word at every position, and CrossEntropy compares the scores with the real next words "
        "(\"next target word\", which ends with <eos>; <pad> fills the short sentences and is ignored, "
        "ignore_index 0). The translator's pad_id is that same <pad>: inside, a PaddingMask marks the filler of "
        "the short sources (\"le chat\" is read as \"le chat <pad>\") and of the targets, and no attention looks "
        "at it, so a short sentence means the same whether or not the batch holds longer ones. To translate, the decoder starts from <bos> and appends its best word until it "
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
    description = (
        f"Long memory: each sequence has {length} tokens, each one of {RECALL['symbols']} symbols, and the task is to say, "
        "after reading all of it, which symbol came FIRST (the later ones are random and do not matter, but they "
        "look just like the first). Two recurrent networks read the same sequences side by side, each with its "
        "own embedding, a SequenceRNN with 32 state numbers whose last state is scored by a Linear layer, and its "
        "own CrossEntropy: on top a SimpleRNN, h_t = tanh(x_t Wx + h_(t−1) Wh + b); below an LSTM, whose cell "
        "state c_t = f⊙c_(t−1) + i⊙g is carried forward by a forget gate f and written only when the input gate "
        "i opens, rather than squeezed through tanh together with every new input. The trainer minimises the sum "
        "of the two losses (\"total loss\"), which trains each network on its own loss, because they share no "
        "weights; the target judges the LSTM's loss alone: it must fall by 90%. Train it (Adam, 1500 steps of 32 "
        "sequences) and compare the two losses: the LSTM learns to recall the first token (its loss falls from "
        "ln 8 ≈ 2.08 to almost 0), while the SimpleRNN's hardly moves. Step through backpropagation and "
        "look at each SequenceRNN's time_grad_norms, ‖∂loss/∂h_t‖ for t = 1 … L: for the SimpleRNN it shrinks by "
        "a factor at every step back in time (each step multiplies by Whᵀ and by tanh's slope), so the first "
        "token, the only one that matters, gets almost no gradient: the vanishing gradient. The LSTM's gradient "
        "reaches back along its cell state. (Over 20 tokens instead of 40, Adam, which rescales even tiny "
        "gradients, often does teach the SimpleRNN: the vanishing gradient is a matter of degree.)"
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
    description = (
        f"A convolutional network tells horizontal bars from vertical ones. Each example is a {size}×{size} "
        "grey image (one channel) of noise with one bright bar, 3 to 8 pixels long, somewhere in it; the label "
        "is 0 for a horizontal bar and 1 for a vertical one. The ConvNet block (open it to see the inside) runs "
        "two stages of Conv2d → ReLU → MaxPool2d: a Conv2d slides 3×3 filters over the image (the same few "
        "weights at every place, so a bar is found wherever it is), ReLU keeps the positive responses, "
        "MaxPool2d keeps the strongest response in each 2×2 window (halving the height and width: 8 → 4 → 2). "
        "The first stage has 4 filters, the second 8; Flatten then turns the 8×2×2 responses into one vector "
        "and a FeedForward scores the two classes, which CrossEntropy compares with the label. Train it (Adam, "
        f"batches of {BARS_BATCH} of {BARS_ROWS} images) and the loss falls by more than 90%. In backpropagation, "
        "watch MaxPool2d send each gradient to the one pixel that won its window, and look at the first "
        "Conv2d's weights before and after training: what do the filters respond to? Two options of the ConvNet "
        "are on here. batchnorm puts a BatchNorm between each Conv2d and its ReLU: while training it rescales every "
        "channel to mean 0 and variance 1 over the batch (then by a learned γ and β) and keeps running averages "
        "of those statistics, which take the batch's place in evaluation, so that an image's score does not depend "
        "on the others in its batch. "
        f"dropout {CONVNET_DROPOUT} switches off a random fifth of the 32 flattened features at every training "
        "step (never in evaluation), so that no single feature can be relied on. Both act only while training; "
        "switch them off in the inspector and train again to compare."
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
    description = (
        "BERT as in the lecture: BERT(x) = TransformerBlock²⁴(EmbedToken(x)), 24 Transformer blocks stacked on "
        "an embedding with learned positions, here narrow (vectors of 32 numbers, 4 attention heads, FeedForward "
        "width 64) so that it trains on a laptop. Open the BERT node to see the stack and open any block to see "
        "Attention → AddNorm → FeedForward → AddNorm. Every block sees the whole sequence in both directions "
        "(no causal mask): BERT encodes, it does not generate. The task is simple on purpose: each sequence has "
        f"{n} tokens, the first one of {BERT_DATA['symbols']} symbols and the rest random distractors, and the "
        "network must say which symbol came first. Collapse averages the 8 output vectors into one, so "
        "the answer has to be found by attention and positions (the average alone forgets where a token was); "
        "a Linear layer scores the 4 symbols and CrossEntropy compares them with the label. Train it (Adam) and "
        "the loss falls by more than 90%. The AddNorm after every sublayer is what lets a signal and its gradient "
        "pass through 48 sublayers: step through backpropagation and compare the gradient norms of block1 and "
        "block24."
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

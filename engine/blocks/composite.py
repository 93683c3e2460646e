"""Composite blocks: Transformer blocks, BERT, ConvNet, LanguageModel, SequenceToSequence.

Each is a graph of the blocks in the other families (see :mod:`engine.blocks._composite` for
the machinery); ``blocks.expand(type_id, params)`` returns that graph for the editor to open,
and the weights are named after the inner nodes: ``attn/Wq``, ``block3/ffn/W1``.

Padding masks reach the Attention nodes inside through the inner graph itself, as wires: a block
that reads vectors (TransformerBlock, TransformerDecoderBlock) has an optional ``mask`` input
(and ``context_mask`` for cross-attention) that its inner graph links to every Attention it
holds; a block that reads token ids (BERT, LanguageModel, SequenceToSequence) finds the padding
itself when ``pad_id`` is set: an inner PaddingMask node turns the ids into the mask and feeds
it to every block inside. With no mask and no ``pad_id`` the inner graphs are exactly what they
were before masks existed, and so are the results. ``dropout`` > 0 likewise adds Dropout nodes
(none at 0).
"""

from __future__ import annotations

from typing import Any, Mapping

from engine.blocks import register
from engine.blocks._base import Example, Kind, Param, ParamType, Port, Shape, shape_str
from engine.blocks._composite import CompositeBlock, GraphBuilder, Output, Source
from engine.errors import ParamError

__all__ = ["BERT", "ConvNet", "LanguageModel", "Output", "SequenceToSequence", "TransformerBlock", "TransformerDecoderBlock"]

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid")
RNN_CELLS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
_DEFAULT_LENGTH = 8  # sequence length of the drill-down graph shown by expand()


def _dim(name: str = "dim", default: int = 32) -> Param:
    return Param(name, ParamType.INT, default, "width d of every vector in the model", minimum=1)


_HEADS = Param("heads", ParamType.INT, 4, "attention heads; must divide dim", minimum=1)
_HIDDEN = Param("hidden", ParamType.INT, None, "width of each FeedForward's hidden layer (empty: 4·dim)", minimum=1, nullable=True)
#: stacks deeper than this take seconds just to build (GPT-3 has 96 layers, BERT-large 24)
MAX_LAYERS = 64
_LAYERS = Param("layers", ParamType.INT, 2, "how many blocks are stacked", minimum=1, maximum=MAX_LAYERS)
_MAX_LEN = Param("max_len", ParamType.INT, 512, "longest sequence accepted (rows of the learned position table)", minimum=1)
_DROPOUT = Param("dropout", ParamType.FLOAT, 0.0, "while training, Dropout with this p on each sublayer's output "
                 "before its AddNorm (0: none)", minimum=0.0, maximum=1.0)
_PAD_ID = Param("pad_id", ParamType.INT, None, "the padding token's id: attention ignores it (empty: no masking)", nullable=True)
_PAD_ID_TRANSFORMER = Param("pad_id", ParamType.INT, None, "the padding token's id: attention ignores it (transformer only; "
                            "empty: no masking)", nullable=True)
_MASK = Port("mask", Kind.ANY, optional=True, doc="(B, L): 0 marks a padding position that attention ignores, 1 a real token")


def _dropped(g: GraphBuilder, name: str, src: Source, p: float) -> Source:
    """``src``, through a Dropout node ``name`` when p > 0."""
    return g.add(name, "Dropout", {"p": p}, x=src) if p > 0 else src


def _pad_mask(g: GraphBuilder, pad_id: int | None, ids: str, name: str = "pad_mask") -> dict[str, Source]:
    """Links ``{"mask": …}`` from an inner PaddingMask of ``ids`` (nothing when pad_id is None)."""
    if pad_id is None:
        return {}
    return {"mask": g.add(name, "PaddingMask", {"pad_id": pad_id}, ids=ids)}


def _check_heads(block: CompositeBlock, dim_param: str = "dim") -> None:
    dim, heads = block.p[dim_param], block.p["heads"]
    if dim % heads:
        raise ParamError(
            f"{block.type_id}: parameter 'heads' ({heads}) must divide '{dim_param}' ({dim}); "
            f"each head takes {dim_param} / heads columns"
        )


def _hidden(block: CompositeBlock) -> int:
    return block.p["hidden"] if block.p["hidden"] is not None else 4 * block.p["dim"]


def _check_mask(block: CompositeBlock, in_shapes: Mapping[str, Shape], port: str, want: Shape, of: str) -> None:
    """A mask input, when connected, must be (B, L) of the sequence ``of``."""
    if port not in in_shapes:
        return
    shape = block.require(in_shapes, port, 2, "(batch, length): 1 for a real token, 0 for padding")
    if tuple(shape) != tuple(want):
        raise block.shape_error(
            f"input '{port}' has shape {shape_str(shape)}, but it needs one number per position of input "
            f"'{of}': {shape_str(want)}"
        )


def _check_ids(block: CompositeBlock, in_shapes: Mapping[str, Shape], port: str, max_len: int | None) -> None:
    shape = block.require(in_shapes, port, 2, "(batch, length) of token ids")
    if max_len is not None and shape[1] > max_len:
        raise block.shape_error(
            f"input '{port}' has sequences of length {shape[1]} (shape {shape_str(shape)}), longer than "
            f"parameter 'max_len' = {max_len}; raise max_len or shorten the sequences"
        )


# --- Transformer blocks ------------------------------------------------------------------------------


@register
class TransformerBlock(CompositeBlock):
    """One Transformer block, post-norm as taught: attention, then a FeedForward, each wrapped
    in AddNorm ("apply f safely: if f is junk, x survives").

    x' = AddNorm(x, Attention(x));  out = AddNorm(x', FeedForward(x')).
    ``mask`` (B, L), when connected, goes to the Attention: padding positions are not attended to.
    ``dropout`` p > 0 puts a Dropout (``attn_drop``, ``ffn_drop``) on each sublayer's output
    before its AddNorm, as in the original Transformer; it acts only while training.
    Inner nodes: ``attn`` (Attention), ``norm1`` (AddNorm), ``ffn`` (FeedForward), ``norm2``.
    Example: dim 16, heads 4, x (2, 5, 16) → out (2, 5, 16)."""

    type_id = "TransformerBlock"
    formula = "x' = AddNorm(x, Attention(x));  out = AddNorm(x', FeedForward(x'))"
    inputs = (Port("x", doc="a sequence of vectors (B, L, dim)"), _MASK)
    outputs = (Port("out", doc="(B, L, dim)"),)
    params = (
        _dim(),
        _HEADS,
        _HIDDEN,
        Param("causal", ParamType.BOOL, False, "position i attends to positions ≤ i only (for generation)"),
        Param("activation", ParamType.CHOICE, "relu", "the FeedForward's nonlinearity", choices=ACTIVATIONS),
        _DROPOUT,
    )
    examples = (
        Example({"dim": 4, "heads": 2, "hidden": 6}, {"x": (1, 3, 4)}),
        Example({"dim": 4, "heads": 1, "hidden": 3, "causal": True, "activation": "gelu"}, {"x": (2, 2, 4)}),
        Example({"dim": 4, "heads": 2, "hidden": 5, "causal": True}, {"x": (2, 3, 4), "mask": (2, 3)}, choices={"mask": (0.0, 1.0)}),
        Example({"dim": 3, "heads": 1, "hidden": 4, "dropout": 0.3}, {"x": (2, 3, 3)}, training=True),
    )

    def check_params(self) -> None:
        _check_heads(self)

    def default_in_shapes(self) -> dict[str, Shape]:
        return {"x": (1, _DEFAULT_LENGTH, self.p["dim"])}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        x = self.require(in_shapes, "x", 3, "(batch, length, dim)")
        self.check_width(in_shapes, "x")
        _check_mask(self, in_shapes, "mask", x[:2], "x")

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        g = GraphBuilder()
        g.input("x", in_shapes["x"])
        mask = {"mask": g.input("mask", in_shapes["mask"])} if "mask" in in_shapes else {}
        drop = self.p["dropout"]
        g.add("attn", "Attention", {"heads": self.p["heads"], "causal": self.p["causal"]}, x="x", **mask)
        g.add("norm1", "AddNorm", x="x", fx=_dropped(g, "attn_drop", ("attn", "out"), drop))
        g.add("ffn", "FeedForward", {"hidden": _hidden(self), "activation": self.p["activation"]}, x="norm1")
        g.add("norm2", "AddNorm", x="norm1", fx=_dropped(g, "ffn_drop", "ffn", drop))
        g.output("out", "norm2")
        return g.graph


@register
class TransformerDecoderBlock(CompositeBlock):
    """A Transformer decoder block: causal self-attention, then cross-attention to ``context``
    (the encoder's output), then a FeedForward, each wrapped in AddNorm (post-norm).

    x' = AddNorm(x, Attention(x, causal)); x'' = AddNorm(x', Attention(x', context));
    out = AddNorm(x'', FeedForward(x'')). ``causal`` applies to the self-attention only.
    ``mask`` (B, Lt) hides padding of x from the self-attention, ``context_mask`` (B, Ls) hides
    padding of the context from the cross-attention; ``dropout`` as in TransformerBlock.
    Inner nodes: ``self_attn``, ``norm1``, ``cross_attn``, ``norm2``, ``ffn``, ``norm3``.
    Example: dim 16, x (2, 5, 16), context (2, 7, 16) → out (2, 5, 16)."""

    type_id = "TransformerDecoderBlock"
    formula = "x' = AddNorm(x, SelfAttn(x));  x'' = AddNorm(x', CrossAttn(x', context));  out = AddNorm(x'', FFN(x''))"
    inputs = (
        Port("x", doc="the decoder's sequence (B, Lt, dim)"),
        Port("context", doc="the encoder's output (B, Ls, dim), attended to by every position"),
        _MASK,
        Port("context_mask", Kind.ANY, optional=True, doc="(B, Ls): 0 marks a padding position of the context"),
    )
    outputs = (Port("out", doc="(B, Lt, dim)"),)
    params = (
        _dim(),
        _HEADS,
        _HIDDEN,
        Param("causal", ParamType.BOOL, True, "self-attention sees positions ≤ i only (a decoder generates left to right)"),
        Param("activation", ParamType.CHOICE, "relu", "the FeedForward's nonlinearity", choices=ACTIVATIONS),
        _DROPOUT,
    )
    examples = (
        Example({"dim": 4, "heads": 2, "hidden": 5}, {"x": (1, 3, 4), "context": (1, 2, 4)}),
        # dim ≥ 3: LayerNorm over 2 numbers gives ±1 whatever they are, so its gradient is ~0.
        Example({"dim": 3, "heads": 1, "hidden": 3, "causal": False, "activation": "tanh"}, {"x": (2, 2, 3), "context": (2, 3, 3)}),
        Example({"dim": 4, "heads": 2, "hidden": 3}, {"x": (2, 3, 4), "context": (2, 4, 4), "context_mask": (2, 4), "mask": (2, 3)},
                choices={"context_mask": (0.0, 1.0, 1.0), "mask": (1.0,)}),
        Example({"dim": 3, "heads": 1, "hidden": 3, "dropout": 0.25}, {"x": (1, 2, 3), "context": (1, 3, 3)}, training=True),
    )

    def check_params(self) -> None:
        _check_heads(self)

    def default_in_shapes(self) -> dict[str, Shape]:
        return {"x": (1, _DEFAULT_LENGTH, self.p["dim"]), "context": (1, _DEFAULT_LENGTH, self.p["dim"])}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        x = self.require(in_shapes, "x", 3, "(batch, length, dim)")
        c = self.require(in_shapes, "context", 3, "(batch, length, dim)")
        self.check_width(in_shapes, "x")
        self.check_width(in_shapes, "context")
        self.expect_dim("context", c, 0, x[0], f"batch, as in input 'x' {shape_str(x)}")
        _check_mask(self, in_shapes, "mask", x[:2], "x")
        _check_mask(self, in_shapes, "context_mask", c[:2], "context")

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        g = GraphBuilder()
        g.input("x", in_shapes["x"])
        g.input("context", in_shapes["context"])
        mask = {"mask": g.input("mask", in_shapes["mask"])} if "mask" in in_shapes else {}
        cmask = {"mask": g.input("context_mask", in_shapes["context_mask"])} if "context_mask" in in_shapes else {}
        drop = self.p["dropout"]
        g.add("self_attn", "Attention", {"heads": self.p["heads"], "causal": self.p["causal"]}, x="x", **mask)
        g.add("norm1", "AddNorm", x="x", fx=_dropped(g, "self_attn_drop", ("self_attn", "out"), drop))
        g.add("cross_attn", "Attention", {"heads": self.p["heads"]}, x="norm1", context="context", **cmask)
        g.add("norm2", "AddNorm", x="norm1", fx=_dropped(g, "cross_attn_drop", ("cross_attn", "out"), drop))
        g.add("ffn", "FeedForward", {"hidden": _hidden(self), "activation": self.p["activation"]}, x="norm2")
        g.add("norm3", "AddNorm", x="norm2", fx=_dropped(g, "ffn_drop", "ffn", drop))
        g.output("out", "norm3")
        return g.graph


@register
class BERT(CompositeBlock):
    """BERT's encoder: token and learned position embeddings, then ``layers`` Transformer
    blocks (not causal: every position sees the whole sequence).

    out = TransformerBlock^layers(EmbedToken(ids, position=learned)).
    ``pad_id``, when set, adds a PaddingMask (``pad_mask``) whose mask every block's attention
    uses, so padding is never attended to. ``dropout`` p > 0 drops the embeddings
    (``embed_drop``) and each block's sublayer outputs while training.
    Inner nodes: ``embed``, then ``block1`` … ``blockN`` (weights ``block3/attn/Wq``, …).
    Example: vocab 100, dim 16, heads 4, layers 2, ids (2, 5) → out (2, 5, 16)."""

    type_id = "BERT"
    formula = "out = TransformerBlock^layers(EmbedToken(ids) + P)"
    inputs = (Port("ids", Kind.IDS, doc="token ids (B, L)"),)
    outputs = (Port("out", doc="one contextual vector per token (B, L, dim)"),)
    params = (
        Param("vocab", ParamType.INT, 1000, "number of distinct tokens", minimum=1),
        _dim(default=64),
        _HEADS,
        Param("layers", ParamType.INT, 24, "how many Transformer blocks are stacked (24, as taught)", minimum=1, maximum=MAX_LAYERS),
        _HIDDEN,
        _MAX_LEN,
        _DROPOUT,
        _PAD_ID,
    )
    examples = (
        Example({"vocab": 5, "dim": 4, "heads": 2, "layers": 2, "hidden": 5, "max_len": 4}, {"ids": (1, 3)}, {"ids": (0, 5)}),
        Example({"vocab": 5, "dim": 3, "heads": 1, "layers": 1, "hidden": 4, "max_len": 4, "pad_id": 0, "dropout": 0.2},
                {"ids": (2, 4)}, {"ids": (0, 5)}, training=True),
    )

    def check_params(self) -> None:
        _check_heads(self)

    def default_in_shapes(self) -> dict[str, Shape]:
        return {"ids": (1, min(_DEFAULT_LENGTH, self.p["max_len"]))}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        _check_ids(self, in_shapes, "ids", self.p["max_len"])

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        g = GraphBuilder()
        g.input("ids", in_shapes["ids"], ids=True)
        mask = _pad_mask(g, self.p["pad_id"], "ids")
        g.add("embed", "EmbedToken", {"vocab": self.p["vocab"], "dim": self.p["dim"], "position": "learned",
                                      "max_len": self.p["max_len"]}, ids="ids")
        drop = self.p["dropout"]
        prev: Source = _dropped(g, "embed_drop", "embed", drop)
        for i in range(1, self.p["layers"] + 1):
            prev = g.add(f"block{i}", "TransformerBlock", {"dim": self.p["dim"], "heads": self.p["heads"],
                                                           "hidden": _hidden(self), "dropout": drop}, x=prev, **mask)
        g.output("out", prev)
        return g.graph


# --- images ------------------------------------------------------------------------------------------


@register
class ConvNet(CompositeBlock):
    """A small convolutional classifier: [Conv2d → ReLU → MaxPool2d] × stages, then Flatten and
    a FeedForward to one score per class.

    Stage s has ``channels[s]`` filters of size kernel × kernel with padding kernel // 2 (the
    image keeps its size), and a 2×2 max-pool halves it. Inner nodes: ``conv1``, ``relu1``,
    ``pool1``, …, ``flatten``, ``ffn``.

    Options: ``batchnorm`` puts a BatchNorm (``bn1``, …) between each Conv2d and its ReLU (the
    convolutions then need no bias: BatchNorm's β does that job); ``dropout`` p > 0 puts a
    Dropout (``drop``) between Flatten and the FeedForward. Both act differently while training.
    Example: channels (8, 16), classes 10, x (4, 1, 28, 28) → out (4, 10)."""

    type_id = "ConvNet"
    formula = "out = FeedForward(Flatten([MaxPool(ReLU(Conv(x)))]^stages))"
    inputs = (Port("x", doc="images (B, C, H, W)"),)
    outputs = (Port("out", doc="class scores (B, classes)"),)
    params = (
        Param("stages", ParamType.INT, 2, "how many conv → ReLU → pool stages (each halves the image)", minimum=1, maximum=16),
        Param("channels", ParamType.INTS, (8, 16), "filters in each stage (one number per stage)", minimum=1),
        Param("classes", ParamType.INT, 10, "number of classes to score", minimum=1),
        Param("kernel", ParamType.INT, 3, "filter size K of every convolution (odd keeps the size)", minimum=1),
        Param("hidden", ParamType.INT, 64, "width of the final FeedForward's hidden layer", minimum=1),
        Param("batchnorm", ParamType.BOOL, False, "BatchNorm after every convolution (before its ReLU)"),
        Param("dropout", ParamType.FLOAT, 0.0, "while training, Dropout with this p before the final FeedForward (0: none)",
              minimum=0.0, maximum=1.0),
    )
    examples = (
        Example({"stages": 1, "channels": (2,), "classes": 3, "hidden": 4}, {"x": (2, 1, 4, 4)}),
        Example({"stages": 2, "channels": (2, 2), "classes": 2, "hidden": 3}, {"x": (1, 2, 4, 4)}),
        Example({"stages": 1, "channels": (2,), "classes": 2, "hidden": 3, "batchnorm": True, "dropout": 0.25},
                {"x": (3, 1, 4, 4)}, training=True),
        Example({"stages": 1, "channels": (2,), "classes": 2, "hidden": 3, "batchnorm": True}, {"x": (2, 1, 4, 4)}),
    )

    def check_params(self) -> None:
        if len(self.p["channels"]) != self.p["stages"]:
            raise ParamError(
                f"ConvNet: parameter 'channels' lists {len(self.p['channels'])} numbers but 'stages' is "
                f"{self.p['stages']}; give one channel count per stage"
            )

    def default_in_shapes(self) -> dict[str, Shape]:
        side = max(28, 2 ** self.p["stages"])
        return {"x": (1, 1, side, side)}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        x = self.require(in_shapes, "x", 4, "(batch, channels, height, width)")
        for axis, what in ((2, "height"), (3, "width")):
            size = x[axis]
            for _ in range(self.p["stages"]):
                size = size + 2 * (self.p["kernel"] // 2) - self.p["kernel"] + 1
                size //= 2
            if size < 1:
                raise self.shape_error(
                    f"input 'x' {what} {x[axis]} (shape {shape_str(x)}) is too small for {self.p['stages']} "
                    f"stages: each 2×2 pool halves it; use bigger images or fewer stages"
                )

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        g = GraphBuilder()
        prev = g.input("x", in_shapes["x"])
        k = self.p["kernel"]
        bn = self.p["batchnorm"]
        for s, channels in enumerate(self.p["channels"], start=1):
            conv = g.add(f"conv{s}", "Conv2d", {"out_channels": channels, "kernel": k, "padding": k // 2,
                                                **({"bias": False} if bn else {})}, x=prev)
            if bn:
                conv = g.add(f"bn{s}", "BatchNorm", x=conv)
            g.add(f"relu{s}", "ReLU", a=conv)
            prev = g.add(f"pool{s}", "MaxPool2d", {"kernel": 2}, x=f"relu{s}")
        g.add("flatten", "Flatten", x=prev)
        flat = _dropped(g, "drop", "flatten", self.p["dropout"])
        g.add("ffn", "FeedForward", {"hidden": self.p["hidden"], "out_features": self.p["classes"]}, x=flat)
        g.output("out", "ffn")
        return g.graph


# --- language models --------------------------------------------------------------------------------


def _sequence_model(g: GraphBuilder, block: CompositeBlock, model: str, prev: Source, causal: bool, prefix: str = "block",
                    mask: Mapping[str, Source] | None = None) -> Source:
    """Stack ``layers`` sequence models named ``{prefix}1…`` on ``prev``; returns the output
    that carries the last one's sequence (B, L, dim). ``mask`` ({"mask": source}) goes to every
    TransformerBlock (recurrent and feed-forward models read padding like any other token)."""
    p = block.p
    for i in range(1, p["layers"] + 1):
        name = f"{prefix}{i}"
        if model == "transformer":
            prev = g.add(name, "TransformerBlock", {"dim": p["dim"], "heads": p["heads"], "hidden": _hidden(block), "causal": causal},
                         x=prev, **(mask or {}))
        elif model == "feedforward":
            prev = g.add(name, "FeedForwardSequenceModel", {"window": p["window"], "hidden": _hidden(block), "out_features": p["dim"]}, x=prev)
        else:
            g.add(name, "SequenceRNN", {"cell": RNN_CELLS[model], "hidden": p["dim"]}, x=prev)
            prev = (name, "seq")
    return prev


@register
class LanguageModel(CompositeBlock):
    """A language model: a prefix of token ids in, scores for the next token out.

    out = GenerateToken(Collapse(SequenceModel(EmbedToken(x)))), the taught formula. The
    SequenceModel is ``layers`` causal Transformer blocks (``transformer``; the embedding adds
    learned positions), stacked SequenceRNNs with state size dim (``rnn``, ``lstm``, ``gru``),
    or FeedForwardSequenceModels over the last ``window`` vectors (``feedforward``). Collapse
    takes the last position, which has seen the whole prefix.

    ``per_position`` skips Collapse and scores the next token after every prefix at once
    (B, L, vocab): position i predicts token i+1, the efficient way to train.
    ``pad_id`` (transformer only), when set, adds a PaddingMask (``pad_mask``) so that no block
    attends to padding, such as the pad tokens that fill a short prefix on the left.
    Inner nodes: ``embed``, ``block1`` … ``blockN``, ``collapse``, ``generate``.
    Example: vocab 50, dim 16, x (2, 7) → out (2, 50); per_position → out (2, 7, 50)."""

    type_id = "LanguageModel"
    formula = "out = GenerateToken(Collapse(SequenceModel(EmbedToken(x))))"
    inputs = (Port("x", Kind.IDS, doc="token ids (B, L): the prefix"),)
    outputs = (Port("out", doc="next-token logits (B, vocab), or (B, L, vocab) per position"),)
    params = (
        Param("vocab", ParamType.INT, 32, "number of distinct tokens", minimum=1),
        _dim(),
        Param("model", ParamType.CHOICE, "transformer", "the sequence model", choices=("transformer", "rnn", "lstm", "gru", "feedforward")),
        _LAYERS,
        _HEADS,
        _HIDDEN,
        _MAX_LEN,
        Param("window", ParamType.INT, 3, "feedforward model: how many of the latest tokens it sees", minimum=1),
        Param("per_position", ParamType.BOOL, False, "scores at every position (B, L, vocab) instead of the last only"),
        _PAD_ID_TRANSFORMER,
    )
    examples = (
        Example({"vocab": 5, "dim": 4, "layers": 1, "heads": 2, "hidden": 5, "max_len": 4}, {"x": (2, 3)}, {"x": (0, 5)}),
        Example({"vocab": 5, "dim": 4, "layers": 1, "heads": 2, "hidden": 5, "max_len": 4, "pad_id": 0}, {"x": (3, 3)}, {"x": (0, 5)}),
        Example({"vocab": 4, "dim": 3, "model": "rnn", "layers": 2}, {"x": (2, 3)}, {"x": (0, 4)}),
        Example({"vocab": 4, "dim": 2, "model": "lstm", "per_position": True}, {"x": (1, 3)}, {"x": (0, 4)}),
        Example({"vocab": 4, "dim": 2, "model": "gru", "layers": 1}, {"x": (2, 3)}, {"x": (0, 4)}),
        Example({"vocab": 4, "dim": 3, "model": "feedforward", "layers": 1, "hidden": 4, "window": 2, "per_position": True},
                {"x": (1, 4)}, {"x": (0, 4)}),
    )

    def check_params(self) -> None:
        if self.p["model"] == "transformer":
            _check_heads(self)

    def default_in_shapes(self) -> dict[str, Shape]:
        return {"x": (1, min(_DEFAULT_LENGTH, self.p["max_len"]))}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        _check_ids(self, in_shapes, "x", self.p["max_len"] if self.p["model"] == "transformer" else None)

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        p = self.p
        g = GraphBuilder()
        g.input("x", in_shapes["x"], ids=True)
        transformer = p["model"] == "transformer"
        mask = _pad_mask(g, p["pad_id"] if transformer else None, "x")
        position = "learned" if transformer else "none"
        g.add("embed", "EmbedToken", {"vocab": p["vocab"], "dim": p["dim"], "position": position, "max_len": p["max_len"]}, ids="x")
        prev = _sequence_model(g, self, p["model"], "embed", causal=True, mask=mask)
        if not p["per_position"]:
            prev = g.add("collapse", "Collapse", {"mode": "last"}, x=prev)
        g.add("generate", "GenerateToken", {"vocab": p["vocab"]}, x=prev)
        g.output("out", "generate")
        return g.graph


@register
class SequenceToSequence(CompositeBlock):
    """An encoder–decoder that turns one sequence into another ("la maison bleue" → "the blue
    house").

    Encoder: EmbedToken over ``src`` → SequenceModel. Decoder: EmbedToken over ``tgt`` (the
    target shifted right: BOS first) → a causal decoder that reads the encoder → GenerateToken
    at every position, so out[:, i] scores target token i+1 given tokens ≤ i.

    - ``transformer``: encoder blocks ``enc1…`` (TransformerBlock), decoder blocks ``dec1…``
      (TransformerDecoderBlock attending to the encoder's output); learned positions.
    - ``rnn`` / ``lstm`` / ``gru``: SequenceRNN layers ``enc1…`` and ``dec1…`` with state size
      dim; decoder layer i starts from encoder layer i's last state (and cell state).

    ``pad_id`` (transformer only), when set, adds PaddingMasks ``src_mask`` and ``tgt_mask``: the
    encoder and the decoder's cross-attention ignore padding in the source, the decoder's
    self-attention padding in the target.
    Inner nodes: ``src_embed``, ``enc1…``, ``tgt_embed``, ``dec1…``, ``generate``.
    Example: src (2, 6), tgt (2, 5), tgt_vocab 40 → out (2, 5, 40)."""

    type_id = "SequenceToSequence"
    formula = "out = GenerateToken(Decoder(EmbedToken(tgt), Encoder(EmbedToken(src))))"
    inputs = (
        Port("src", Kind.IDS, doc="source token ids (B, Ls)"),
        Port("tgt", Kind.IDS, doc="target token ids shifted right, BOS first (B, Lt)"),
    )
    outputs = (Port("out", doc="logits for the next target token at every position (B, Lt, tgt_vocab)"),)
    params = (
        Param("src_vocab", ParamType.INT, 32, "number of distinct source tokens", minimum=1),
        Param("tgt_vocab", ParamType.INT, 32, "number of distinct target tokens", minimum=1),
        _dim(),
        Param("model", ParamType.CHOICE, "transformer", "encoder and decoder kind", choices=("transformer", "rnn", "lstm", "gru")),
        _LAYERS,
        _HEADS,
        _HIDDEN,
        _MAX_LEN,
        _PAD_ID_TRANSFORMER,
    )
    examples = (
        Example({"src_vocab": 5, "tgt_vocab": 4, "dim": 4, "layers": 1, "heads": 2, "hidden": 3, "max_len": 4},
                {"src": (1, 3), "tgt": (1, 2)}, {"src": (0, 5), "tgt": (0, 4)}),
        Example({"src_vocab": 5, "tgt_vocab": 4, "dim": 4, "layers": 1, "heads": 2, "hidden": 3, "max_len": 4, "pad_id": 0},
                {"src": (3, 4), "tgt": (3, 3)}, {"src": (0, 5), "tgt": (0, 4)}),
        Example({"src_vocab": 4, "tgt_vocab": 3, "dim": 2, "model": "lstm", "layers": 2},
                {"src": (2, 3), "tgt": (2, 2)}, {"src": (0, 4), "tgt": (0, 3)}),
        Example({"src_vocab": 4, "tgt_vocab": 3, "dim": 3, "model": "gru", "layers": 1},
                {"src": (2, 2), "tgt": (2, 3)}, {"src": (0, 4), "tgt": (0, 3)}),
    )

    def check_params(self) -> None:
        if self.p["model"] == "transformer":
            _check_heads(self)

    def default_in_shapes(self) -> dict[str, Shape]:
        n = min(_DEFAULT_LENGTH, self.p["max_len"])
        return {"src": (1, n), "tgt": (1, n)}

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        max_len = self.p["max_len"] if self.p["model"] == "transformer" else None
        src = self.require(in_shapes, "src", 2, "(batch, length) of token ids")
        _check_ids(self, in_shapes, "src", max_len)
        _check_ids(self, in_shapes, "tgt", max_len)
        self.expect_dim("tgt", in_shapes["tgt"], 0, src[0], f"batch, as in input 'src' {shape_str(src)}")

    def build(self, in_shapes: Mapping[str, Shape]) -> Any:
        p = self.p
        model = p["model"]
        g = GraphBuilder()
        g.input("src", in_shapes["src"], ids=True)
        g.input("tgt", in_shapes["tgt"], ids=True)
        position = "learned" if model == "transformer" else "none"
        pad_id = p["pad_id"] if model == "transformer" else None
        src_mask = _pad_mask(g, pad_id, "src", "src_mask")
        tgt_mask = _pad_mask(g, pad_id, "tgt", "tgt_mask")
        g.add("src_embed", "EmbedToken", {"vocab": p["src_vocab"], "dim": p["dim"], "position": position, "max_len": p["max_len"]}, ids="src")
        g.add("tgt_embed", "EmbedToken", {"vocab": p["tgt_vocab"], "dim": p["dim"], "position": position, "max_len": p["max_len"]}, ids="tgt")
        memory = _sequence_model(g, self, model, "src_embed", causal=False, prefix="enc", mask=src_mask)
        masks = {**tgt_mask, **({"context_mask": src_mask["mask"]} if src_mask else {})}
        prev: Source = "tgt_embed"
        for i in range(1, p["layers"] + 1):
            name = f"dec{i}"
            if model == "transformer":
                g.add(name, "TransformerDecoderBlock", {"dim": p["dim"], "heads": p["heads"], "hidden": _hidden(self)},
                      x=prev, context=memory, **masks)
                prev = name
            else:
                starts: dict[str, Any] = {"h0": (f"enc{i}", "last")}
                if model == "lstm":
                    starts["c0"] = (f"enc{i}", "last_c")
                g.add(name, "SequenceRNN", {"cell": RNN_CELLS[model], "hidden": p["dim"]}, x=prev, **starts)
                prev = (name, "seq")
        g.add("generate", "GenerateToken", {"vocab": p["tgt_vocab"]}, x=prev)
        g.output("out", "generate")
        return g.graph

"""The PyTorch twin of every block that needs more than one line: the classes an exported model
is made of.

This file is never imported by the engine. The exporter reads it as text (with :mod:`ast`) and
copies the classes and helpers a graph uses into the generated ``.py``, which therefore depends
on torch alone. Keeping them here, as ordinary Python, lets the tests import and check them
directly, and lets a reader see every torch implementation in one place.

Every class keeps the block's weight names and layouts (``Linear.W`` is (d_in, d_out), used as
``x @ W + b``), so the code reads like the block's formula and the weights need no transposing;
the exceptions are the recurrent networks, which use ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (fast,
cuDNN on a GPU, one ONNX op with a dynamic sequence length) with torch's layouts.

``__init__`` draws fresh weights with the block's own rules (``Model()`` gives a freshly
initialised model); the exported ``.safetensors`` holds the app's actual weights
(``Model.load()``). Fixed tables and constants are built in float64 and cast once by
``Model(dtype=...)``, as the app builds them in float64 and casts them to its dtype.

The exporter adds each class's docstring (the block's formula from its spec) when it copies it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Uniform in ±1/√fan_in: nn.Linear's default rule, the app's default too."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


class Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.W = nn.Parameter(uniform_(torch.empty(d_in, d_out), d_in))
        self.b = nn.Parameter(uniform_(torch.empty(d_out), d_in)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.W
        return out if self.b is None else out + self.b


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int, d_out: int, activation: str = "relu") -> None:
        super().__init__()
        self.W1 = nn.Parameter(uniform_(torch.empty(d, hidden), d))
        self.b1 = nn.Parameter(uniform_(torch.empty(hidden), d))
        self.W2 = nn.Parameter(uniform_(torch.empty(hidden, d_out), hidden))
        self.b2 = nn.Parameter(uniform_(torch.empty(d_out), hidden))
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x @ self.W1 + self.b1) @ self.W2 + self.b2


class FeedForwardSequenceModel(nn.Module):
    def __init__(self, d: int, window: int, hidden: int, d_out: int, activation: str = "relu") -> None:
        super().__init__()
        self.window = window
        self.W1 = nn.Parameter(uniform_(torch.empty(window * d, hidden), window * d))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.W2 = nn.Parameter(uniform_(torch.empty(hidden, d_out), hidden))
        self.b2 = nn.Parameter(torch.zeros(d_out))
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length = self.window, x.shape[1]
        padded = F.pad(x, (0, 0, n - 1, 0))  # zero vectors before the start
        # row i: [x_{i−n+1}; …; x_i], oldest first
        z = torch.cat([padded[:, j:j + length] for j in range(n)], dim=-1)
        return self.act(z @ self.W1 + self.b1) @ self.W2 + self.b2


class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)


class AddNorm(LayerNorm):
    def forward(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.layer_norm(x + fx, self.gamma.shape, self.gamma, self.beta, self.eps)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """P[i, 2j] = sin(i / 10000^(2j/dim)), P[i, 2j+1] = cos(…), 0-based i; float64."""
    i = torch.arange(length, dtype=torch.float64)[:, None]
    two_j = torch.arange(0, dim, 2, dtype=torch.float64)[None, :]
    angle = i / torch.pow(10000.0, two_j / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table


class EmbedToken(nn.Module):
    def __init__(self, vocab: int, dim: int, position: str = "none", max_len: int = 512) -> None:
        super().__init__()
        self.E = nn.Parameter(torch.randn(vocab, dim))  # normal(0, 1), like nn.Embedding
        self.P = nn.Parameter(torch.randn(max_len, dim)) if position == "learned" else None
        if position == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)
        else:
            self.table = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(ids, self.E)
        length = ids.shape[1]
        if self.P is not None:
            out = out + self.P[:length]
        elif self.table is not None:
            out = out + self.table[:length]
        return out


class Collapse(nn.Module):
    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "first":
            return x[:, 0]
        if self.mode == "last":
            return x[:, -1]
        # max: the gradient goes to the first position holding each feature's maximum
        arg = x.argmax(dim=1, keepdim=True)
        return x.gather(1, arg).squeeze(1)


class GenerateToken(nn.Module):
    def __init__(self, d: int, vocab: int, tied: bool = False) -> None:
        super().__init__()
        # tied: E is an EmbedToken's table, passed to forward
        self.E = None if tied else nn.Parameter(uniform_(torch.empty(vocab, d), d))
        self.b = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: torch.Tensor, E: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.E if E is None else E, self.b)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int = 1, causal: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        for name in ("Wq", "Wk", "Wv", "Wo"):
            setattr(self, name, nn.Parameter(uniform_(torch.empty(d, d), d)))
        for name in ("bq", "bv", "bo"):
            setattr(self, name, nn.Parameter(torch.zeros(d)) if bias else None)
        # bk would add the same number q·bk to every score in a row, which softmax ignores: it
        # cannot change the output and its gradient is exactly zero. It is kept (as a buffer,
        # so the weights load and optimisers skip it) but not used.
        self.register_buffer("bk", torch.zeros(d) if bias else None)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        c = x if context is None else context
        q, k, v = x @ self.Wq, c @ self.Wk, c @ self.Wv
        if self.bq is not None:
            q, v = q + self.bq, v + self.bv
        # (B, L, d) → (B, heads, L, d/heads): head h takes columns h·dh … (h+1)·dh
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        hidden = torch.zeros(scores.shape[-2:], dtype=torch.bool, device=x.device)
        if self.causal:  # query i sees keys j ≤ i only
            hidden = torch.ones(scores.shape[-2:], dtype=torch.bool, device=x.device).triu(1)
        if mask is not None:  # mask (B, Lk): 0 hides a padding key from every query
            hidden = hidden | (mask == 0)[:, None, None, :]
        sees = ~hidden.all(dim=-1, keepdim=True)  # a query that sees no key gets A = 0 (torch: NaN)
        scores = scores.masked_fill(hidden, float("-inf")).masked_fill(~sees, 0.0)
        a = scores.softmax(dim=-1) * sees
        out = (a @ v).transpose(1, 2).flatten(2) @ self.Wo
        if self.bo is not None:
            out = out + self.bo
        return out, a.detach()  # attn is for display only: no gradient flows back through it


class RNNCell(nn.Module):
    def __init__(self, d_in: int, hidden: int, cell: str = "LSTM", activation: str = "tanh") -> None:
        super().__init__()
        k = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cell]
        self.cell, self.act = cell, ACTIVATIONS[activation]
        # torch's rule for recurrent weights: uniform ±1/√hidden (fan-in = hidden); biases 0,
        # the LSTM forget gate 1
        self.Wx = nn.Parameter(uniform_(torch.empty(d_in, k * hidden), hidden))
        self.Wh = nn.Parameter(uniform_(torch.empty(hidden, k * hidden), hidden))
        if cell == "GRU":
            self.bx = nn.Parameter(torch.zeros(k * hidden))
            self.bh = nn.Parameter(torch.zeros(k * hidden))
        else:
            self.b = nn.Parameter(torch.zeros(k * hidden))
            if cell == "LSTM":
                with torch.no_grad():
                    self.b[hidden:2 * hidden] = 1.0

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # a state of batch 1 is shared by the whole batch (a zero start): spelt out, so that every
        # runtime (onnxruntime's fused Gemm too) sees (B, h)
        h = h.expand(x.shape[0], -1)
        if self.cell == "SimpleRNN":
            return self.act(x @ self.Wx + h @ self.Wh + self.b)
        if self.cell == "LSTM":
            i, f, g, o = (x @ self.Wx + h @ self.Wh + self.b).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c.expand(x.shape[0], -1) + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        xr, xz, xn = (x @ self.Wx + self.bx).chunk(3, dim=-1)
        hr, hz, hn = (h @ self.Wh + self.bh).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class SequenceRNN(nn.Module):
    def __init__(self, d_in: int, hidden: int, cell: str = "LSTM", activation: str = "tanh", bidirectional: bool = False) -> None:
        super().__init__()
        self.cell, self.hidden = cell, hidden
        self.directions = 2 if bidirectional else 1
        if cell == "SimpleRNN" and activation == "sigmoid":
            # torch's nn.RNN has no sigmoid: run the cell step by step instead
            self.rnn = None
            self.steps = nn.ModuleList(RNNCell(d_in, hidden, cell, activation) for _ in range(self.directions))
            return
        kind = {"SimpleRNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}[cell]
        extra = {"nonlinearity": activation} if cell == "SimpleRNN" else {}
        self.rnn = kind(d_in, hidden, batch_first=True, bidirectional=bidirectional, **extra)
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if name.startswith("weight"):
                    uniform_(p, hidden)
                else:
                    p.zero_()
                    if cell == "LSTM" and name.startswith("bias_ih"):
                        p[hidden:2 * hidden] = 1.0  # the forget gate starts at 1
                    if cell != "GRU" and name.startswith("bias_hh"):
                        # One bias per gate, as in the app: torch's second bias stays 0 and is
                        # not trained (bias_ih holds b).
                        p.requires_grad_(False)

    def _initial(self, s: torch.Tensor | None) -> torch.Tensor | None:
        """(B, h) shared by both directions, or (B, 2h) laid out like ``last``, as torch's
        (directions, B, h)."""
        if s is None:
            return None
        if s.shape[-1] == self.hidden:
            return s.unsqueeze(0).expand(self.directions, -1, -1).contiguous()
        return s.unflatten(-1, (self.directions, self.hidden)).transpose(0, 1).contiguous()

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.rnn is None:
            return self._steps(x, h0)
        h, c = self._initial(h0), self._initial(c0)
        if self.cell == "LSTM":
            if h is not None or c is not None:
                zeros = torch.zeros(self.directions, x.shape[0], self.hidden, dtype=x.dtype, device=x.device)
                h, c = (zeros if h is None else h), (zeros if c is None else c)
            seq, (h_n, c_n) = self.rnn(x, None if h is None else (h, c))
            # last = [forward h_L ; backward h_1]: each direction's final state
            return seq, torch.cat(h_n.unbind(0), dim=-1), torch.cat(c_n.unbind(0), dim=-1)
        seq, h_n = self.rnn(x, h)
        return seq, torch.cat(h_n.unbind(0), dim=-1)

    def _steps(self, x: torch.Tensor, h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self._initial(h0)
        seqs, lasts = [], []
        for d, step in enumerate(self.steps):
            h = x.new_zeros(x.shape[0], self.hidden) if starts is None else starts[d]
            order = range(x.shape[1]) if d == 0 else reversed(range(x.shape[1]))
            states = {}
            for t in order:  # the backward direction reads the sequence from the end
                h = states[t] = step(x[:, t], h)
            seqs.append(torch.stack([states[t] for t in range(x.shape[1])], dim=1))
            lasts.append(h)
        return torch.cat(seqs, dim=-1), torch.cat(lasts, dim=-1)


class Conv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int] = (3, 3), stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1), groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = c_in // groups * kernel[0] * kernel[1]
        self.W = nn.Parameter(uniform_(torch.empty(c_out, c_in // groups, *kernel), fan_in))
        self.b = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W, self.b, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups)


class BatchNorm(nn.Module):
    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(c))
        self.beta = nn.Parameter(torch.zeros(c))
        # running statistics: used in eval(), updated in train(); buffers, not trained
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels on axis 1, statistics over every other axis: nn.BatchNorm1d/2d's rule
        return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta, self.training,
                            self.momentum, self.eps)


def class_loss(logprob: torch.Tensor, target: torch.Tensor, ignore_index: int = -1, weight: list[float] | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Σ_i w[t_i]·ℓ_i / Σ_i w[t_i] over the positions whose target is not ``ignore_index``, with
    ℓ_i = (1 − ε)(−logprob_i[t_i]) + (ε/C) Σ_c w[c]/w[t_i]·(−logprob_i[c]) as torch; 0 (not NaN)
    when nothing is counted."""
    keep = target != ignore_index
    safe = torch.where(keep, target, 0)
    nll = -logprob.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    w = torch.tensor(weight, dtype=logprob.dtype, device=logprob.device) if weight else None
    counted = keep.to(logprob.dtype) if w is None else w[safe] * keep
    total = (nll * counted).sum()
    if label_smoothing:
        smooth = -(logprob if w is None else logprob * w).sum(dim=-1) / logprob.shape[-1]
        total = (1 - label_smoothing) * total + label_smoothing * (smooth * keep).sum()
    n = counted.sum()
    return total / torch.where(n > 0, n, torch.ones_like(n))


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1, weight: list[float] | None = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Softmax cross-entropy: the class loss of log_softmax(logits)."""
    return class_loss(torch.log_softmax(logits, dim=-1), target, ignore_index, weight, label_smoothing)

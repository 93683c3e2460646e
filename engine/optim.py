"""Optimisers and gradient clipping, with exactly the update rules of ``torch.optim``.

- :class:`SGD`: ``torch.optim.SGD`` with momentum, Nesterov momentum and (L2) weight decay;
  dampening 0.
- :class:`Adam`: ``torch.optim.Adam`` (not AMSGrad); weight decay is L2 added to the gradient,
  as torch's Adam does.
- :class:`AdamW`: ``torch.optim.AdamW``: Adam with decoupled weight decay, ``p ← p(1 − lr·λ)``
  before the Adam step, the gradient left alone (Loshchilov & Hutter).
- :func:`clip_grad_norm`: ``torch.nn.utils.clip_grad_norm_`` over every gradient at once.

Weights and gradients are nested dicts ``{node_id: {weight_name: array}}`` (the runtime's
layout). :meth:`Optimizer.step` writes NEW arrays into the weights dict instead of changing the
old ones in place, so snapshots that the editor still holds from the last pass stay as they were.

Optimiser state is a flat ``{key: numpy array}`` dict so that it can travel in the ``.npz``
member of a saved container; keys are prefixed by the optimiser type (``adam/step``,
``adam/exp_avg/<node>/<weight>``, ``sgd/momentum_buffer/<node>/<weight>``), so a file trained with
one optimiser is never resumed with another one's state by mistake.

Only weights that get a gradient are updated: buffers (BatchNorm's running statistics) have none,
so no optimiser, weight decay included, ever touches them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from engine.errors import EngineError

Weights = dict[str, dict[str, np.ndarray]]


class OptimizerError(EngineError):
    """Bad optimiser settings or a saved state that does not fit the weights."""


def _check_number(owner: str, name: str, value: Any, *, minimum: float = 0.0, below: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptimizerError(f"{owner}: '{name}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (below is not None and value >= below):
        rng = f"≥ {minimum:g}" + (f" and < {below:g}" if below is not None else "")
        raise OptimizerError(f"{owner}: '{name}' must be {rng}, got {value!r}")
    return value


def global_norm(grads: Mapping[str, Mapping[str, np.ndarray]]) -> float:
    """The 2-norm of all gradients taken together, accumulated in float64 (no overflow for
    float32 gradients that are large but finite)."""
    total = 0.0
    for ws in grads.values():
        for g in ws.values():
            g64 = np.asarray(g, dtype=np.float64)
            total += float(np.dot(g64.ravel(), g64.ravel()))
    return math.sqrt(total)


def clip_grad_norm(grads: Weights, max_norm: float) -> float:
    """Scale every gradient by ``max_norm / (norm + 1e-6)`` when that factor is below 1, like
    ``torch.nn.utils.clip_grad_norm_``; returns the norm before clipping. ``grads`` gets new
    arrays (the old ones are not changed)."""
    max_norm = _check_number("clipping", "clip", max_norm)
    norm = global_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:  # torch multiplies by min(coef, 1); multiplying by 1 changes nothing
        for ws in grads.values():
            for name, g in ws.items():
                ws[name] = g * g.dtype.type(coef)
    return norm


class Optimizer:
    """Base class: holds hyper-parameters and a per-weight state; see the module docstring."""

    type_id = ""
    #: the per-weight state it keeps (``<type>/<slot>/<node>/<weight>`` in a saved file), and
    #: which of those can never be negative: what a loaded file is checked against
    slots: tuple[str, ...] = ()
    nonnegative: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = _check_number(self.type_id, "lr", lr)
        self.steps = 0  # how many updates have been applied

    def step(self, weights: Weights, grads: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Apply one update to every weight that has a gradient."""
        self.steps += 1
        for node, ws in weights.items():
            for name, p in ws.items():
                g = grads.get(node, {}).get(name)
                if g is None:
                    continue
                ws[name] = self._update(f"{node}/{name}", p, np.asarray(g, p.dtype))

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def hyper(self) -> dict[str, Any]:
        """The settings, in the form the training section of a file uses."""
        raise NotImplementedError

    # --- saving ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, np.ndarray], weights: Weights) -> None:
        raise NotImplementedError

    def _state_arrays(self, state: Mapping[str, np.ndarray], slot: str, weights: Weights) -> dict[str, np.ndarray]:
        """Per-weight arrays of one slot (``exp_avg``...), checked against the weights."""
        prefix = f"{self.type_id}/{slot}/"
        out: dict[str, np.ndarray] = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            wkey = key[len(prefix):]
            node, _, name = wkey.partition("/")
            p = weights.get(node, {}).get(name)
            if p is None:
                raise OptimizerError(f"the saved {self.type_id} state has '{slot}' for weight {wkey!r}, which the graph does not have")
            value = np.asarray(value)
            if value.shape != p.shape:
                raise OptimizerError(
                    f"the saved {self.type_id} state '{slot}' for weight {wkey!r} has shape {value.shape}, "
                    f"but the weight has shape {p.shape}"
                )
            out[wkey] = np.array(value, dtype=p.dtype)
        return out


class SGD(Optimizer):
    """``torch.optim.SGD``: ``g ← g + λp``; with momentum ``b ← μb + g`` (``b = g`` on the first
    step) and ``g ← b``, or with Nesterov momentum ``g ← g + μb``; then ``p ← p − lr·g``."""

    type_id = "sgd"
    slots = ("momentum_buffer",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(lr)
        self.momentum = _check_number("sgd", "momentum", momentum)
        self.weight_decay = _check_number("sgd", "weight_decay", weight_decay)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise OptimizerError(f"sgd: 'nesterov' must be true or false, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and not self.momentum:
            raise OptimizerError("sgd: Nesterov momentum needs a momentum above 0 (torch's rule too)")
        self.buffers: dict[str, np.ndarray] = {}

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        t = p.dtype.type
        if self.weight_decay:
            g = g + t(self.weight_decay) * p
        if self.momentum:
            buf = self.buffers.get(key)
            # dampening is 0, so the buffer starts as a copy of the first gradient (torch does this)
            buf = g.copy() if buf is None else t(self.momentum) * buf + g
            self.buffers[key] = buf
            g = g + t(self.momentum) * buf if self.nesterov else buf
        return p - t(self.lr) * g

    def hyper(self) -> dict[str, Any]:
        return {"type": "sgd", "lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"sgd/step": np.asarray(self.steps, dtype=np.int64)}
        for key in sorted(self.buffers):
            state[f"sgd/momentum_buffer/{key}"] = self.buffers[key]
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], weights: Weights) -> None:
        self.steps = _step_count(state, "sgd")
        self.buffers = self._state_arrays(state, "momentum_buffer", weights)


class Adam(Optimizer):
    """``torch.optim.Adam``: ``g ← g + λp``; ``m ← m + (1−β₁)(g − m)``; ``v ← β₂v + (1−β₂)g²``;
    ``p ← p − (lr/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε)``."""

    type_id = "adam"
    slots = ("exp_avg", "exp_avg_sq")
    nonnegative = ("exp_avg_sq",)
    decoupled = False  # AdamW: decay the weight itself instead of adding λp to the gradient

    def __init__(self, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        name = self.type_id
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise OptimizerError(f"{name}: 'betas' must be two numbers [β₁, β₂], got {betas!r}")
        self.betas = (_check_number(name, "betas[0]", betas[0], below=1.0), _check_number(name, "betas[1]", betas[1], below=1.0))
        self.eps = _check_number(name, "eps", eps)
        self.weight_decay = _check_number(name, "weight_decay", weight_decay)
        self.exp_avg: dict[str, np.ndarray] = {}
        self.exp_avg_sq: dict[str, np.ndarray] = {}

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        t = p.dtype.type
        beta1, beta2 = self.betas
        if self.weight_decay and self.decoupled:
            p = p * t(1.0 - self.lr * self.weight_decay)  # torch: param.mul_(1 - lr * weight_decay)
        elif self.weight_decay:
            g = g + t(self.weight_decay) * p
        m = self.exp_avg.get(key)
        v = self.exp_avg_sq.get(key)
        if m is None:
            m, v = np.zeros_like(p), np.zeros_like(p)
        # torch: exp_avg.lerp_(grad, 1 - beta1), whose formula depends on which side of 0.5 the weight is
        w = 1.0 - beta1
        m = m + t(w) * (g - m) if w < 0.5 else g - (g - m) * t(1.0 - w)
        v = t(beta2) * v + t(1.0 - beta2) * (g * g)
        self.exp_avg[key], self.exp_avg_sq[key] = m, v
        step = self.steps
        # torch computes the bias corrections in Python floats (double), then applies them
        bias1 = 1.0 - beta1 ** step
        bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
        step_size = self.lr / bias1
        denom = np.sqrt(v) / t(bias2_sqrt) + t(self.eps)
        return p - t(step_size) * (m / denom)

    def hyper(self) -> dict[str, Any]:
        return {"type": self.type_id, "lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict[str, np.ndarray]:
        t = self.type_id
        state = {f"{t}/step": np.asarray(self.steps, dtype=np.int64)}
        for key in sorted(self.exp_avg):
            state[f"{t}/exp_avg/{key}"] = self.exp_avg[key]
            state[f"{t}/exp_avg_sq/{key}"] = self.exp_avg_sq[key]
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], weights: Weights) -> None:
        self.steps = _step_count(state, self.type_id)
        self.exp_avg = self._state_arrays(state, "exp_avg", weights)
        self.exp_avg_sq = self._state_arrays(state, "exp_avg_sq", weights)
        if set(self.exp_avg) != set(self.exp_avg_sq):
            raise OptimizerError(f"the saved {self.type_id} state is incomplete: 'exp_avg' and 'exp_avg_sq' name different weights")


class AdamW(Adam):
    """``torch.optim.AdamW``: ``p ← p·(1 − lr·λ)``, then the Adam step with the gradient as it is
    (decoupled weight decay); torch's default λ is 0.01."""

    type_id = "adamw"
    decoupled = True

    def __init__(self, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr, betas, eps, weight_decay)


def _step_count(state: Mapping[str, np.ndarray], type_id: str) -> int:
    value = state.get(f"{type_id}/step")
    if value is None:
        raise OptimizerError(f"the saved optimiser state is not {type_id} state (it has no '{type_id}/step')")
    value = np.asarray(value)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 0:
        raise OptimizerError(f"the saved {type_id} state has a bad step count {value!r}")
    return int(value)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def state_type(state: Mapping[str, np.ndarray]) -> str | None:
    """Which optimiser a saved state belongs to (``"sgd"``, ``"adam"``, ``"adamw"``) or None if unknown."""
    for type_id in OPTIMIZERS:
        if f"{type_id}/step" in state:
            return type_id
    return None


def create(settings: Mapping[str, Any]) -> Optimizer:
    """An optimiser from the ``optimizer`` settings of a file (``{"type": "adam", "lr": ...}``)."""
    settings = dict(settings)
    type_id = settings.pop("type", "sgd")
    cls = OPTIMIZERS.get(type_id)
    if cls is None:
        raise OptimizerError(f"unknown optimiser {type_id!r} (choose one of: {', '.join(OPTIMIZERS)})")
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    try:
        return cls(**settings)
    except TypeError:
        allowed = {"sgd": "lr, momentum, weight_decay, nesterov", "adam": "lr, betas, eps, weight_decay",
                   "adamw": "lr, betas, eps, weight_decay"}[type_id]
        unknown = sorted(set(settings) - set(allowed.split(", ")))
        raise OptimizerError(f"{type_id} has no setting {', '.join(repr(u) for u in unknown)} (its settings: {allowed})") from None

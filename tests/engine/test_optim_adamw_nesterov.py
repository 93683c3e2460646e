"""AdamW (decoupled weight decay) and SGD with Nesterov momentum: torch.optim's trajectories in
float32 and float64, settings in a file's training section, state saved and resumed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import optim
from engine.train import TrainingError, normalize

SETTINGS = [
    pytest.param({"type": "adamw", "lr": 0.01}, id="adamw-default-decay"),
    pytest.param({"type": "adamw", "lr": 0.003, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.3}, id="adamw-strong-decay"),
    pytest.param({"type": "adamw", "lr": 0.02, "weight_decay": 0.0}, id="adamw-no-decay"),
    pytest.param({"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, id="sgd-nesterov"),
    pytest.param({"type": "sgd", "lr": 0.02, "momentum": 0.5, "weight_decay": 0.1, "nesterov": True}, id="sgd-nesterov-wd"),
]


def _weights(rng: np.random.Generator, dtype: Any) -> dict[str, dict[str, np.ndarray]]:
    return {"a": {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)},
            "c": {"value": rng.standard_normal(()).astype(dtype)}}


@pytest.mark.torch
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_optim(settings: dict, dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = _weights(rng, dtype)
    theirs = {n: {k: torch.tensor(v.copy(), requires_grad=True) for k, v in ws.items()} for n, ws in ours.items()}
    params = [t for ws in theirs.values() for t in ws.values()]
    kwargs = {k: v for k, v in settings.items() if k != "type"}
    ref = (torch.optim.SGD if settings["type"] == "sgd" else torch.optim.AdamW)(params, **kwargs)
    opt = optim.create(settings)
    for _ in range(8):
        g = {n: {k: rng.standard_normal(v.shape).astype(dtype) for k, v in ws.items()} for n, ws in ours.items()}
        for n, ws in theirs.items():
            for k, t in ws.items():
                t.grad = torch.tensor(g[n][k])
        ref.step()
        opt.step(ours, g)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for n, ws in ours.items():
        for k, w in ws.items():
            assert w.dtype == dtype
            np.testing.assert_allclose(w, theirs[n][k].detach().numpy(), **tol)


def test_adamw_decays_the_weight_not_the_gradient():
    """With a zero gradient Adam's L2 decay still moves p through m/√v; AdamW's is exactly p(1 − lr·λ)."""
    p = {"n": {"w": np.array([2.0, -4.0])}}
    zero = {"n": {"w": np.zeros(2)}}
    opt = optim.create({"type": "adamw", "lr": 0.1, "weight_decay": 0.5})
    opt.step(p, zero)
    np.testing.assert_array_equal(p["n"]["w"], np.array([2.0, -4.0]) * (1 - 0.1 * 0.5))
    assert optim.AdamW().weight_decay == 0.01  # torch's default


def test_nesterov_needs_momentum_and_a_bool():
    with pytest.raises(optim.OptimizerError, match="Nesterov momentum needs a momentum above 0"):
        optim.create({"type": "sgd", "nesterov": True})
    with pytest.raises(TrainingError, match="'nesterov' must be true or false"):
        normalize({"optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": 1}})


def test_the_training_section_takes_them_and_state_resumes():
    spec = normalize({"optimizer": {"type": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 0.05}})
    assert spec["optimizer"] == {"type": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 0.05}
    assert normalize({"optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True}})["optimizer"]["nesterov"] is True
    with pytest.raises(TrainingError, match="unknown optimizer 'adamax'"):
        normalize({"optimizer": {"type": "adamax"}})
    rng = np.random.default_rng(1)
    for settings in ({"type": "adamw", "lr": 0.01}, {"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}):
        w1, w2 = _weights(rng, np.float64), None
        w2 = {n: {k: v.copy() for k, v in ws.items()} for n, ws in w1.items()}
        grads = [{n: {k: rng.standard_normal(v.shape) for k, v in ws.items()} for n, ws in w1.items()} for _ in range(4)]
        straight = optim.create(settings)
        for g in grads:
            straight.step(w1, g)
        first = optim.create(settings)
        for g in grads[:2]:
            first.step(w2, g)
        state = first.state_dict()
        assert optim.state_type(state) == settings["type"]
        second = optim.create(settings)
        second.load_state_dict(state, w2)
        for g in grads[2:]:
            second.step(w2, g)
        for n in w1:
            for k in w1[n]:
                assert w1[n][k].tobytes() == w2[n][k].tobytes()

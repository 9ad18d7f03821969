"""Precision that learns: float32 master weights + autocast move the weights as float32 does; pure
bf16 at a small learning rate does not (the rounding argument in opd_lib.lab.precision)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from opd_lib.lab.precision import (
    MixedPrecision,
    autocast_dtype,
    require_float32_master,
    rounded_away,
)

LR = 1e-6  # the hub preset's learning rate


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 32))
    for p in model.parameters():  # weights of the typical size of a trained LM's (std 0.02)
        torch.nn.init.normal_(p, std=0.02)
    return model


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 64, generator=g), torch.randint(0, 32, (64,), generator=g)


def _update(model: torch.nn.Module, mp: MixedPrecision | None) -> torch.Tensor:
    """One AdamW step at LR; the change of every parameter, in float32, flattened."""
    before = [p.detach().float().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    x, y = _batch()
    if mp is None:  # the plain step in whatever dtype the model is in
        loss = torch.nn.functional.cross_entropy(model(x.to(model[0].weight.dtype)).float(), y)
        loss.backward()
        opt.step()
    else:
        with mp.autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        mp.backward(loss)
        mp.step(opt, model.parameters(), grad_clip=1.0)
    after = [p.detach().float() for p in model.parameters()]
    return torch.cat([(a - b).flatten() for a, b in zip(after, before, strict=True)])


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return _update(_model(), None)  # float32 throughout


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_master_weights_with_autocast_move_like_float32(reference, dtype):
    """Tolerance: every weight moves, > 99.5 % of them in the float32 step's direction, and the
    update vector is within 10 % of the float32 one (relative L2). Adam's first step is
    ``-lr g / (|g| + eps)``: about ``lr`` per weight in the direction of ``-g``, so half-precision
    compute only matters where it flips the sign of a near-zero gradient (each flip costs 2 lr)."""
    delta = _update(_model(), MixedPrecision("cpu", dtype))
    assert torch.linalg.vector_norm(delta - reference) / torch.linalg.vector_norm(reference) < 0.1
    assert (delta.sign() == reference.sign()).float().mean() > 0.995
    assert (delta != 0).all()
    assert reference.abs().max() == pytest.approx(LR, rel=0.05)  # the update is ~lr per weight


def test_pure_bf16_step_rounds_the_update_away(reference):
    """Same step with bf16 weights and moments: almost nothing moves."""
    delta = _update(_model().to(torch.bfloat16), None)
    moved = (delta != 0).float().mean().item()
    assert moved < 0.05
    assert torch.linalg.vector_norm(delta - reference) / torch.linalg.vector_norm(reference) > 0.9


def test_rounded_away_matches_the_spacing_argument():
    """An update u survives in bf16 only where half the spacing, 2^(e-8), is <= u = 1e-6: e <=
    -12, |w| < 2^-11. For w ~ N(0, 0.02^2) that is P(|w| < 2^-11) = erf(2^-11 / (0.02 sqrt 2)),
    about 2 %; the rest (98 %) rounds away."""
    w = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 0.02
    predicted = 1 - math.erf(2**-11 / (0.02 * math.sqrt(2)))
    assert rounded_away(w, LR, torch.bfloat16) == pytest.approx(predicted, abs=0.002)
    assert rounded_away(w, LR, torch.float32) < 0.01  # float32's spacing at 0.02 is 1.9e-9
    assert rounded_away(w, 1e-3, torch.bfloat16) < 0.01  # large steps survive


def test_refusals():
    require_float32_master(_model(), LR)  # float32: fine
    with pytest.raises(ValueError, match="round away"):
        require_float32_master(_model().to(torch.bfloat16), LR)
    require_float32_master(_model().to(torch.bfloat16).requires_grad_(False), LR)  # frozen: fine
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision("cpu", torch.float64)
    model = _model().to(torch.bfloat16)
    model(torch.randn(2, 64, dtype=torch.bfloat16)).sum().backward()
    with pytest.raises(ValueError, match="fp32"):
        MixedPrecision("cpu", torch.bfloat16).step(
            torch.optim.AdamW(model.parameters()), model.parameters(), 1.0
        )
    assert autocast_dtype("cpu") == torch.bfloat16


def test_fp16_scaler_skips_an_overflowing_step():
    model = _model()
    mp = MixedPrecision("cpu", torch.float16)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    with mp.autocast():
        loss = model(torch.full((4, 64), 1e4)).float().sum() * 1e30  # overflows when scaled
    mp.backward(loss)
    norm = mp.step(opt, model.parameters(), grad_clip=1.0)
    assert not math.isfinite(norm)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert mp.state_dict()["scale"] < 65536.0  # the scale backed off

"""Tests for opd_lib.fused_divergence: values and gradients against logits-level references."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_lib.divergences import token_divergence
from opd_lib.fused_divergence import fused_token_divergence

B, T, H_S, H_T, V = 3, 5, 8, 6, 40
CASES = [("fkl", 0.5), ("rkl", 0.5), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9), ("jsd", 0.0),
         ("jsd", 1.0), ("tv", 0.5)]  # fmt: skip


def make(dtype=torch.float64, seed=0, bias=True, scale=1.0):
    """Student/teacher hidden states and heads; the student's inputs require grad."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, grad=False, s=1.0):
        x = (s * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)
        return x.requires_grad_(grad)

    return dict(
        hs=rand(B, T, H_S, grad=True), w=rand(V, H_S, grad=True, s=scale),
        b=rand(V, grad=True) if bias else None,
        ht=rand(B, T, H_T), wt=rand(V, H_T, s=1.5 * scale),
    )  # fmt: skip


def padded_mask(seed=0):
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[0, 0] = True
    mask[:, -1] = False  # padding at the end of every row
    return mask


def fused(x, **kw):
    return fused_token_divergence(x["hs"], x["w"], x["ht"], x["wt"], student_bias=x["b"], **kw)


def unfused(x, dtype=None, chunk_size=None, **kw):
    """The logits-level reference: full logits, then token_divergence (autograd or chunked)."""
    hs, w, b, ht, wt = (
        None if x[k] is None else (x[k] if dtype is None else x[k].to(dtype))
        for k in ("hs", "w", "b", "ht", "wt")
    )
    student = hs @ w.t() + (0 if b is None else b)
    return token_divergence(student, ht @ wt.t(), chunk_size=chunk_size, **kw)


def grads(out, x, weights):
    """Gradients of ``sum(weights * out)`` w.r.t. the student's hidden states, head and bias."""
    leaves = [x[k] for k in ("hs", "w", "b") if x[k] is not None]
    return torch.autograd.grad((out * weights).sum(), leaves)


@pytest.mark.parametrize("kind,beta", CASES)
@pytest.mark.parametrize("temperature,reduction", [(1.0, "none"), (0.5, "mean"), (2.0, "sum")])
def test_float64_matches_autograd_reference(kind, beta, temperature, reduction):
    x, mask = make(seed=len(kind) + int(10 * beta)), padded_mask()
    kw = dict(kind=kind, beta=beta, temperature=temperature, mask=mask, reduction=reduction)
    out, ref = fused(x, chunk_size=2, **kw), unfused(x, **kw)
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    for got, want in zip(grads(out, x, weights), grads(ref, x, weights), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,beta", CASES)
def test_float32_matches_chunked_token_divergence(kind, beta):
    x, mask = make(dtype=torch.float32, seed=3, scale=2.0), padded_mask(1)
    kw = dict(kind=kind, beta=beta, temperature=0.7, mask=mask, reduction="mean")
    out, ref = fused(x, chunk_size=3, **kw), unfused(x, chunk_size=4, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads(out, x, 1.0), grads(ref, x, 1.0), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_explicit_jsd_formula():
    """The generalized JSD written out from its definition, independently of the library."""
    x, beta = make(seed=5, bias=False), 0.3
    with torch.no_grad():
        log_q = torch.log_softmax(x["hs"] @ x["w"].t(), -1)
        log_p = torch.log_softmax(x["ht"] @ x["wt"].t(), -1)
        p, q = log_p.exp(), log_q.exp()
        m = beta * p + (1 - beta) * q
        want = beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
        got = fused(x, kind="jsd", beta=beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_all_but_one_position_masked():
    x = make(seed=7)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 2] = True
    out = fused(x, kind="jsd", beta=0.4, mask=mask, reduction="mean")
    ref = unfused(x, kind="jsd", beta=0.4, mask=mask, reduction="mean")
    torch.testing.assert_close(out, ref)
    got = grads(out, x, 1.0)
    for g, want in zip(got, grads(ref, x, 1.0), strict=True):
        torch.testing.assert_close(g, want, rtol=0, atol=1e-10)
    assert (got[0][~mask] == 0).all() and (got[0][1, 2] != 0).any()


def test_padding_is_never_projected():
    """NaN hidden states at masked-out positions cannot reach the result or the gradient."""
    x, mask = make(seed=2), padded_mask(2)
    with torch.no_grad():
        x["hs"][~mask] = math.nan
        x["ht"][~mask] = math.nan
    out = fused(x, kind="rkl", mask=mask, reduction="sum")
    assert torch.isfinite(out)
    (grad_h, grad_w, grad_b) = grads(out, x, 1.0)
    assert torch.isfinite(grad_w).all() and torch.isfinite(grad_b).all()
    assert (grad_h[~mask] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["fkl", "jsd"])
def test_half_precision_accumulates_in_float32(dtype, kind):
    x = make(dtype=dtype, seed=4)
    mask = padded_mask(3)
    kw = dict(kind=kind, beta=0.5, mask=mask, reduction="mean")
    out = fused(x, chunk_size=2, **kw)
    ref = unfused(x, dtype=torch.float32, **kw)  # the same (rounded) inputs, in float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    got = grads(out, x, 1.0)
    assert [g.dtype for g in got] == [dtype] * 3
    for g, want in zip(got, torch.autograd.grad(ref, [x["hs"], x["w"], x["b"]]), strict=True):
        torch.testing.assert_close(g.float(), want.float(), rtol=1e-2, atol=2e-3)


def test_frozen_head_gets_no_gradient_and_teacher_none():
    x = make(seed=6)
    x["w"].requires_grad_(False)
    x["b"].requires_grad_(False)
    x["ht"].requires_grad_(True)
    out = fused(x, kind="fkl", reduction="mean")
    out.backward()
    assert x["w"].grad is None and x["b"].grad is None and x["ht"].grad is None
    (want,) = torch.autograd.grad(unfused(x, kind="fkl", reduction="mean"), [x["hs"]])
    torch.testing.assert_close(x["hs"].grad, want)


def test_no_grad_gives_values_only():
    x = make(seed=8)
    with torch.no_grad():
        out = fused(x, kind="tv", reduction="none")
    assert not out.requires_grad
    torch.testing.assert_close(out, unfused(x, kind="tv").detach())


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    chunk=st.integers(1, 20),
    kind=st.sampled_from(["fkl", "rkl", "jsd", "tv"]),
    beta=st.floats(0.05, 0.95),
    temperature=st.floats(0.3, 3.0),
)
def test_property_any_chunking_and_mask(seed, chunk, kind, beta, temperature):
    x = make(seed=seed, bias=seed % 2 == 0)
    mask = (torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.5).to(torch.int64)
    mask[seed % B, seed % T] = 1  # a 0/1 mask selecting at least one position
    kw = dict(kind=kind, beta=beta, temperature=temperature, reduction="sum")
    out = fused(x, mask=mask, chunk_size=chunk, **kw)
    ref = unfused(x, mask=mask.bool(), **kw)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for got, want in zip(grads(out, x, 1.0), grads(ref, x, 1.0), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_auto_chunk_size_worked_numbers():
    from opd_lib.fused_divergence import auto_chunk_size

    # ceil(M / 8) clamped to [32, 256]: 2,048 and 8,192 tokens with 10 % padding select 1,843
    # and 7,373 positions
    assert [auto_chunk_size(m) for m in (0, 1, 256, 300, 1843, 2048, 7373)] == [
        32, 32, 32, 38, 231, 256, 256]  # fmt: skip
    with pytest.raises(ValueError, match="selected_tokens"):
        auto_chunk_size(-1)


@pytest.mark.parametrize("kind", ["fkl", "rkl", "jsd", "tv"])
def test_default_chunks_and_row_blocks_match_reference(kind):
    """300 selected positions: 8 balanced default chunks (38 rows, the last 34), each swept in
    row blocks; a non-uniform weighting also takes the head gradient's second sweep."""
    gen = torch.Generator().manual_seed(5)
    x = dict(hs=torch.randn(3, 110, H_S, generator=gen, dtype=torch.float64).requires_grad_(),
             w=torch.randn(V, H_S, generator=gen, dtype=torch.float64).requires_grad_(),
             b=torch.randn(V, generator=gen, dtype=torch.float64).requires_grad_(),
             ht=torch.randn(3, 110, H_T, generator=gen, dtype=torch.float64),
             wt=torch.randn(V, H_T, generator=gen, dtype=torch.float64))  # fmt: skip
    mask = torch.ones(3, 110, dtype=torch.bool)
    mask[:, 100:] = False  # 3 x 100 = 300 selected
    kw = dict(kind=kind, beta=0.3, temperature=1.5, mask=mask, reduction="none")
    out, ref = fused(x, **kw), unfused(x, **kw)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    weights = torch.rand(out.shape, generator=gen, dtype=out.dtype)
    for got, want in zip(grads(out, x, weights), grads(ref, x, weights), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


BAD = [
    (dict(w=torch.zeros(V, H_S + 1)), ValueError, "student_head"),
    (dict(wt=torch.zeros(V, H_T + 2)), ValueError, "teacher_head"),
    (dict(wt=torch.zeros(V + 1, H_T)), ValueError, "vocabulary sizes differ"),
    (dict(w=torch.nn.Linear(H_S, V)), TypeError, "student_head"),
    (dict(ht=torch.zeros(B, T + 1, H_T)), ValueError, "positions differ"),
    (dict(hs=torch.zeros(H_S)), ValueError, "student_hidden"),
    (dict(b=torch.zeros(V + 1)), ValueError, "student_bias"),
    (dict(kind="kl"), ValueError, "unknown kind"),
    (dict(kind="jsd", beta=1.5), ValueError, "beta"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=math.inf), ValueError, "temperature"),
    (dict(chunk_size=0), ValueError, "chunk_size"),
    (dict(chunk_size=2.5), ValueError, "chunk_size"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(mask=torch.ones(B, T + 1, dtype=torch.bool)), ValueError, "mask shape"),
    (dict(mask=torch.zeros(B, T, dtype=torch.bool)), ValueError, "selects no tokens"),
    (dict(mask=torch.full((B, T), 2)), ValueError, "mask must hold only 0 and 1"),
    (dict(mask=torch.ones(B, T)), ValueError, "mask must be a boolean tensor"),
    (dict(hs=torch.zeros(B, T, H_S, dtype=torch.int64)), TypeError, "student_hidden"),
]


@pytest.mark.parametrize("change,error,match", BAD)
def test_bad_inputs_are_named(change, error, match):
    x = make(dtype=torch.float32)
    tensors = {k: change.pop(k) for k in list(change) if k in x}
    x |= tensors
    with pytest.raises(error, match=match):
        fused(x, **change)


# ---------------------------------------------------------------- figure data


def test_memory_floor_worked_number():
    from opd_lib.fused_divergence import memory_floor_bytes

    assert memory_floor_bytes(8192, 1024, floats_per_token=0) == 32 * 2**20  # Qwen3-0.6B, 8k
    assert memory_floor_bytes(10, 4) == 10 * 8 * 4
    with pytest.raises(ValueError, match="hidden_size"):
        memory_floor_bytes(10, 0)


def test_cost_figure_data_ratios_and_statuses():
    from opd_lib.sim.fused_cost import cost_figure_data, ratio_summary

    meta = {"vocab": 1000, "padding": 0.1, "row": 512}

    def run(method, kind, status="ok", t=1.0, mb=100.0, n=1024):
        return dict(method=method, kind=kind, tokens=n, hidden=64, status=status, time_s=t,
                    extra_mb=mb)  # fmt: skip

    runs = [run("trl", "jsd", t=4.0, mb=400.0), run("ours", "jsd", t=1.0, mb=20.0),
            run("naive", "jsd", status="does not fit"), run("trl", "fkl", t=2.0, mb=400.0),
            run("ours", "fkl", t=1.0, mb=-3.0), run("trl", "rkl", status="timed out")]  # fmt: skip
    assert cost_figure_data({"meta": meta, "runs": runs}, measured_only=False)["kinds"] == [
        "fkl", "rkl", "jsd"]  # fmt: skip
    data = cost_figure_data({"meta": meta, "runs": runs})
    assert data["methods"] == ["trl", "ours", "naive"]
    assert data["kinds"] == ["fkl", "jsd"]
    assert data["time_vs_trl"][1].tolist()[:2] == [1.0, 0.25]
    assert data["memory_vs_trl"][1, 1] == pytest.approx(0.05)
    assert data["extra_mib"][0, 1] == 0.0  # a negative RSS difference is 0, not a gain
    assert data["status"][1][2] == "does not fit" and math.isnan(data["time_s"][1, 2])
    selected = 2 * (512 - 51)
    assert data["floor_mib"][0] == pytest.approx(selected * (64 + 4) * 4 / 2**20)
    assert data["logits_mib"][0] == pytest.approx(1024 * 1000 * 4 / 2**20)
    summary = ratio_summary(data)
    assert summary["cells"] == 2
    assert (summary["min_speedup"], summary["max_speedup"]) == (2.0, 4.0)
    assert summary["max_memory_ratio"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="liger"):
        ratio_summary(data, "liger")


def test_plot_fused_cost_draws_every_method():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from opd_lib.plotting import plot_fused_cost
    from opd_lib.sim.fused_cost import cost_figure_data

    meta = {"vocab": 1000, "padding": 0.1, "row": 512}
    runs = [dict(method=m, kind="jsd", tokens=1024, hidden=64, status="ok", time_s=1.0,
                 extra_mb=10.0) for m in ("trl", "ours")]  # fmt: skip
    runs.append(dict(method="ours", kind="fkl", tokens=1024, hidden=64, status="does not fit"))
    fig, (a, b) = plt.subplots(1, 2)
    plot_fused_cost(a, b, cost_figure_data({"meta": meta, "runs": runs}, measured_only=False))
    assert len(a.patches) == 4 and len(b.patches) == 4  # 2 methods x 2 cells (NaN bars too)
    assert [t.get_text() for t in b.texts] == ["ours: does not fit"]
    plt.close(fig)

r"""Mamba and Mamba2 (Hugging Face `MambaForCausalLM`, its sequential pure-torch path, and
`Mamba2ForCausalLM`, its chunked one) explained with MambaLRP (Jafari et al. 2024,
NeurIPS) through `lrpfn.text.explain`.

The reference below writes a one-layer Mamba and the MambaLRP relevance pass in float64
NumPy from the paper's equations, independent of lrpfn: $\Delta$, $B$ and $C$ held
constant, so the scan $h_t = \bar A_t h_{t-1} + \bar B_t u_t$, $y_t = C_t h_t + D u_t$ is
linear in $u$; epsilon on the linear maps, the causal depthwise convolution and the sums;
the gate $y \odot \mathrm{silu}(z)$ half and half; SiLU and RMSNorm pass relevance.
For Mamba2 the reference writes the scan as its explicit matrix (see
`mamba2_lrp_reference`). (The models run their scans in float32, hence the float32-level
tolerance.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lrpfn
from lrpfn import composites, text
from lrpfn.capture import SOURCE

transformers = pytest.importorskip("transformers")

EPS = 1e-3


def _mamba(layers: int, bias: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.MambaConfig(
        vocab_size=30, hidden_size=8, state_size=3, num_hidden_layers=layers, expand=2,
        conv_kernel=3, use_bias=bias, use_conv_bias=bias, time_step_rank=2,
    )  # fmt: skip
    with warnings.catch_warnings():  # "the fast path is not available": the torch path it is
        warnings.simplefilter("ignore")
        model = transformers.MambaForCausalLM(config).double().eval()
    return model


def _explain(model, ids, rules):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return text.explain(model, ids, rules=rules)


def _array(tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def st(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def silu(z):
    return z / (1.0 + np.exp(-z))


def mamba_lrp_reference(model, ids, target):
    """Relevance at the token embeddings of a one-layer Mamba, float64 (see the module)."""
    p = {name: _array(value) for name, value in model.named_parameters()}
    p["lm_head.weight"] = _array(model.lm_head.weight)  # tied to the embeddings
    mixer = "backbone.layers.0.mixer."
    bias = lambda name: p.get(mixer + name, 0.0)  # noqa: E731
    eps_norm = model.config.layer_norm_epsilon
    e = _array(model.get_input_embeddings()(ids))  # (batch, L, D)
    batch, length, _ = e.shape
    rms = lambda v: v / np.sqrt((v**2).mean(-1, keepdims=True) + eps_norm)  # noqa: E731
    x = rms(e) * p["backbone.layers.0.norm.weight"]
    proj = x @ p[mixer + "in_proj.weight"].T + bias("in_proj.bias")
    xs, z = np.split(proj, 2, axis=-1)
    w_conv = p[mixer + "conv1d.weight"][:, 0, :]  # (E, K)
    kernel = w_conv.shape[1]
    padded = np.concatenate([np.zeros((batch, kernel - 1, xs.shape[2])), xs], 1)
    xc = sum(padded[:, k : k + length] * w_conv[:, k] for k in range(kernel)) + bias("conv1d.bias")
    u = silu(xc)
    rank, state = model.config.time_step_rank, model.config.state_size
    selection = u @ p[mixer + "x_proj.weight"].T
    dt_raw, b, c = np.split(selection, [rank, rank + state], axis=-1)
    dt = np.log1p(np.exp(dt_raw @ p[mixer + "dt_proj.weight"].T + p[mixer + "dt_proj.bias"]))
    a = -np.exp(p[mixer + "A_log"])  # (E, N)
    a_bar = np.exp(a[None, None] * dt[..., None])  # (batch, L, E, N)
    bu = dt[..., None] * b[:, :, None, :] * u[..., None]
    h, states, scan = np.zeros_like(bu[:, 0]), [], []
    for t in range(length):
        h = a_bar[:, t] * h + bu[:, t]
        states.append(h)
        scan.append((h * c[:, t, None, :]).sum(-1))
    scan = np.stack(scan, 1)
    y = scan + u * p[mixer + "D"]
    gated = y * silu(z)
    out = gated @ p[mixer + "out_proj.weight"].T + bias("out_proj.bias")
    hidden = e + out
    final = rms(hidden) * p["backbone.norm_f.weight"]
    logits = final[:, -1] @ p["lm_head.weight"].T
    # relevance, from the explained logit back to the embeddings
    r_logits = np.zeros_like(logits)
    r_logits[np.arange(batch), target] = logits[np.arange(batch), target]
    r_hidden = np.zeros_like(hidden)
    r_hidden[:, -1] = final[:, -1] * ((r_logits / st(logits)) @ p["lm_head.weight"])
    r_e = e / st(hidden) * r_hidden  # the residual's share; RMSNorms pass relevance on
    r_out = out / st(hidden) * r_hidden
    r_gated = gated * ((r_out / st(out)) @ p[mixer + "out_proj.weight"])
    r_y, r_z = r_gated / 2, r_gated / 2  # the gate: half and half; SiLU passes
    r_scan, r_u = scan / st(y) * r_y, u * p[mixer + "D"] / st(y) * r_y
    r_h = np.zeros_like(bu[:, 0])
    for t in reversed(range(length)):
        r_h = r_h + states[t] * c[:, t, None, :] / st(scan[:, t])[..., None] * r_scan[:, t, :, None]
        r_u[:, t] += (bu[:, t] / st(states[t]) * r_h).sum(-1)
        previous = states[t - 1] if t > 0 else np.zeros_like(r_h)
        r_h = a_bar[:, t] * previous / st(states[t]) * r_h
    s_conv = r_u / st(xc)  # the convolution (epsilon), then its transpose
    s_padded = np.concatenate([s_conv, np.zeros((batch, kernel - 1, xs.shape[2]))], 1)
    r_xs = xs * sum(s_padded[:, kernel - 1 - k : kernel - 1 - k + length] * w_conv[:, k]
                    for k in range(kernel))  # fmt: skip
    r_proj = np.concatenate([r_xs, r_z], -1)
    r_x = x * ((r_proj / st(proj)) @ p[mixer + "in_proj.weight"])
    return logits[np.arange(batch), target], r_e + r_x


def test_mamba_matches_the_float64_reference_of_mamba_lrp():
    model = _mamba(layers=1, bias=True)
    ids = torch.randint(0, 30, (2, 7), generator=torch.Generator().manual_seed(1))
    explanation = _explain(model, ids, composites.mamba_lrp(epsilon=EPS))
    logit, expected = mamba_lrp_reference(model, ids, explanation.target.numpy())
    np.testing.assert_allclose(explanation.logit.double().numpy(), logit, rtol=1e-5)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        explanation.relevance.numpy(), expected, atol=1e-6 * scale
    )  # measured: 5e-8


def test_bias_free_mamba_conserves_relevance():
    """Bias-free (the dt_proj bias feeds only the held step size): every op conserves up to
    the stabilizer, so the token scores sum to the explained logit."""
    model = _mamba(layers=2, bias=False)
    ids = torch.randint(0, 30, (3, 6), generator=torch.Generator().manual_seed(2))
    explanation = _explain(model, ids, composites.mamba_lrp(epsilon=1e-12))
    torch.testing.assert_close(
        explanation.scores.sum(-1), explanation.logit.double(), rtol=1e-5, atol=1e-7
    )


class _Logits(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings):
        return self.model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]


def test_the_selection_parameters_take_no_relevance():
    model = _mamba(layers=1, bias=True)
    embeddings = model.get_input_embeddings()(torch.randint(0, 30, (1, 5))).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = lrpfn.prepare(_Logits(model), composites.mamba_lrp(), example_input=embeddings)
        found = lrpfn.relevances(plan, embeddings)
    projections = [
        node.name
        for node in plan.module.graph.nodes
        if node.meta.get(SOURCE) and node.meta[SOURCE].name.endswith("mixer.x_proj")
    ]
    assert projections and not any(name in found for name in projections)
    assert any(name.endswith("in_proj") or "linear" in name for name in found)


def test_text_explain_picks_mamba_lrp_for_mamba():
    model = _mamba(layers=1, bias=True)
    ids = torch.randint(0, 30, (1, 5))
    default = _explain(model, ids, None).relevance
    torch.testing.assert_close(default, _explain(model, ids, composites.mamba_lrp()).relevance)


# --- Mamba2 (its chunked pure-torch path) ---------------------------------------------------


def _mamba2(bias: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Mamba2Config(
        vocab_size=30, hidden_size=8, state_size=3, num_heads=4, head_dim=4, expand=2,
        n_groups=1, num_hidden_layers=1, conv_kernel=3, chunk_size=4, use_bias=bias,
        use_conv_bias=bias,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.Mamba2ForCausalLM(config).double().eval()


def mamba2_lrp_reference(model, ids, target):
    r"""Relevance at the embeddings of a one-layer Mamba2, float64, with $\epsilon = 0$ on
    the scan: with $\Delta$, $B$, $C$ held constant the scan is the linear map
    $y_t = \sum_{s \le t} (C_t \cdot B_s)\, e^{A \sum_{s < r \le t} \Delta_r} \Delta_s x_s
    + D x_t$ per head, written here as its matrix $M$, whose LRP-0 is
    $R_{x_s} = \sum_t M_{ts} x_s / y_t\, R_{y_t}$ (any order of the scan's sums gives this)."""
    p = {name: _array(value) for name, value in model.named_parameters()}
    p["lm_head.weight"] = _array(model.lm_head.weight)
    mixer, config = "backbone.layers.0.mixer.", model.config
    bias = lambda name: p.get(mixer + name, 0.0)  # noqa: E731
    heads, width, state = config.num_heads, config.head_dim, config.state_size
    inner = heads * width
    rms = lambda v, eps: v / np.sqrt((v**2).mean(-1, keepdims=True) + eps)  # noqa: E731
    e = _array(model.get_input_embeddings()(ids))
    batch, length, _ = e.shape
    x = rms(e, config.layer_norm_epsilon) * p["backbone.layers.0.norm.weight"]
    proj = x @ p[mixer + "in_proj.weight"].T + bias("in_proj.bias")
    z, xbc, dt = np.split(proj, [inner, 2 * inner + 2 * state], axis=-1)
    w_conv = p[mixer + "conv1d.weight"][:, 0, :]
    kernel = w_conv.shape[1]
    padded = np.concatenate([np.zeros((batch, kernel - 1, xbc.shape[2])), xbc], 1)
    conv = sum(padded[:, k : k + length] * w_conv[:, k] for k in range(kernel)) + bias(
        "conv1d.bias"
    )
    u_all = silu(conv)
    u, b, c = np.split(u_all, [inner, inner + state], axis=-1)
    dt = np.log1p(np.exp(dt + p[mixer + "dt_bias"]))  # (batch, L, heads)
    a = -np.exp(p[mixer + "A_log"])  # (heads,)
    decay = np.cumsum(dt * a, axis=1)  # sum_{r <= t} dt_r A
    causal = np.tril(np.ones((length, length)))
    m = (
        np.einsum("btn,bsn->bts", c, b)[..., None]
        * np.exp(np.clip(decay[:, :, None] - decay[:, None, :], None, 0.0))
        * dt[:, None, :, :]
        * causal[None, :, :, None]
    )  # (batch, t, s, heads)
    xs = u.reshape(batch, length, heads, width)
    terms = m[..., None] * xs[:, None]  # (batch, t, s, heads, width): M_ts x_s
    y = terms.sum(2) + p[mixer + "D"][:, None] * xs
    y = y.reshape(batch, length, inner)
    gated = y * silu(z)
    normed = rms(gated, config.layer_norm_epsilon) * p[mixer + "norm.weight"]
    out = normed @ p[mixer + "out_proj.weight"].T + bias("out_proj.bias")
    hidden = e + out
    final = rms(hidden, config.layer_norm_epsilon) * p["backbone.norm_f.weight"]
    logits = final[:, -1] @ p["lm_head.weight"].T
    r_logits = np.zeros_like(logits)
    r_logits[np.arange(batch), target] = logits[np.arange(batch), target]
    r_hidden = np.zeros_like(hidden)
    r_hidden[:, -1] = final[:, -1] * ((r_logits / st(logits)) @ p["lm_head.weight"])
    r_e = e / hidden * r_hidden  # the residual sum: epsilon 0 (1e-12 in the test) too
    r_out = out / hidden * r_hidden
    r_gated = normed * ((r_out / st(out)) @ p[mixer + "out_proj.weight"])  # norms pass
    r_y, r_z = r_gated / 2, r_gated / 2
    r_y = r_y.reshape(batch, length, heads, width) / y.reshape(batch, length, heads, width)
    r_u = (terms * r_y[:, :, None]).sum(1) + p[mixer + "D"][:, None] * xs * r_y
    r_conv = np.concatenate([r_u.reshape(batch, length, inner), 0 * b, 0 * c], -1)
    s_padded = np.concatenate([r_conv / st(conv), np.zeros((batch, kernel - 1, xbc.shape[2]))], 1)
    r_xbc = xbc * sum(s_padded[:, kernel - 1 - k : kernel - 1 - k + length] * w_conv[:, k]
                      for k in range(kernel))  # fmt: skip
    r_proj = np.concatenate([r_z, r_xbc, 0 * dt], -1)
    r_x = x * ((r_proj / st(proj)) @ p[mixer + "in_proj.weight"])
    return logits[np.arange(batch), target], r_e + r_x


def test_mamba2_matches_the_float64_reference_of_mamba_lrp():
    model = _mamba2(bias=True)
    ids = torch.randint(0, 30, (2, 7), generator=torch.Generator().manual_seed(1))
    explanation = _explain(model, ids, composites.mamba_lrp(epsilon=EPS) | {
        composites.SUM: lrpfn.rules.Epsilon(1e-12),
        composites.POOLING: lrpfn.rules.Epsilon(1e-12),
        composites.MATMUL: lrpfn.rules.UniformProduct(1e-12),
    })  # fmt: skip
    logit, expected = mamba2_lrp_reference(model, ids, explanation.target.numpy())
    np.testing.assert_allclose(explanation.logit.double().numpy(), logit, rtol=1e-5)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        explanation.relevance.numpy(), expected, atol=1e-6 * scale
    )  # measured: 1e-7


def test_bias_free_mamba2_conserves_relevance():
    model = _mamba2(bias=False)
    ids = torch.randint(0, 30, (3, 6), generator=torch.Generator().manual_seed(2))
    explanation = _explain(model, ids, composites.mamba_lrp(epsilon=1e-12))
    torch.testing.assert_close(
        explanation.scores.sum(-1), explanation.logit.double(), rtol=1e-5, atol=1e-7
    )

r"""LRP for LSTM, GRU and RNN in float64 NumPy, written from the papers' equations.

Independent of lrpfn: the forward pass is written out gate by gate from PyTorch's
documented equations, and the relevance pass follows Arras et al. 2017 ("Explaining
recurrent neural network predictions in sentiment analysis", WASSA) and Arras et al. 2019
("Evaluating recurrent neural network explanations", BlackboxNLP):

- a linear map $z_j = \sum_i w_{ji} a_i + b_j$ (epsilon rule, the bias share absorbed):
  $R_{a_i} = \sum_j w_{ji} a_i / (z_j + \epsilon\,\mathrm{sign}(z_j)) \, R_{z_j}$;
- a sum of terms $z = \sum_k t_k$ splits in proportion: $R_{t_k} = t_k / (z + \epsilon
  \,\mathrm{sign}(z)) \, R_z$ (the cell update $c = f c_{prev} + i g$, the GRU's
  interpolation $h = (1 - u) n + u h_{prev}$, its candidate $W_{in} x + r (W_{hn} h + b)$);
- a product gate x signal gives `1 - share` of its relevance to the signal and `share` to
  the gate (`share` = 0: signal-takes-all, the papers' rule; 0.5: equal split);
- tanh, sigmoid and ReLU pass relevance on unchanged.

Parameters are plain dicts of NumPy arrays per layer and direction, in PyTorch's layout
(`weight_ih` of shape (gates * hidden, input), gate order i, f, g, o for the LSTM and
r, z, n for the GRU). Sequences are lists over time of (batch, features) arrays.
"""

from __future__ import annotations

import numpy as np
import torch


def sign(z):
    return np.where(z >= 0, 1.0, -1.0)


def stabilized(z, eps):
    return z + eps * sign(z)


def lrp_linear(a, w, z, relevance, eps):
    """$R_a = a \\odot (W^\\top (R / \\mathrm{st}(z)))$ for $z = W a + b$ (rows of `a` are samples)."""
    return a * ((relevance / stabilized(z, eps)) @ w)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def parameters(module: torch.nn.Module, layer: int, direction: int) -> dict[str, np.ndarray]:
    """One layer and direction's parameters of `module` as float64 arrays."""
    suffix = "" if isinstance(module, torch.nn.RNNCellBase) else f"_l{layer}"
    suffix += "_reverse" if direction else ""
    found = {}
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
        value = getattr(module, name + suffix, None)
        if value is not None:
            found[name] = value.detach().double().numpy()
    for name in ("bias_ih", "bias_hh"):
        found.setdefault(name, np.zeros(found["weight_ih"].shape[0]))
    found["bias"] = module.bias
    return found


# forward and relevance of one step ---------------------------------------------------------


def lstm_forward(p, x, h, c):
    hidden = p["weight_ih"].shape[0] // 4
    zx = x @ p["weight_ih"].T + p["bias_ih"]
    z = zx + h @ p["weight_hh"].T + p["bias_hh"]
    parts = [z[:, k * hidden : (k + 1) * hidden] for k in range(4)]
    i, f, o = sigmoid(parts[0]), sigmoid(parts[1]), sigmoid(parts[3])
    g = np.tanh(parts[2])
    c_new = f * c + i * g
    m = o * np.tanh(c_new)
    h_new = m @ p["weight_hr"].T if "weight_hr" in p else m
    cache = {"x": x, "h": h, "c": c, "z": parts, "i": i, "f": f, "g": g, "o": o, "c_new": c_new}
    return h_new, c_new, {**cache, "m": m, "h_new": h_new}


def lstm_relevance(p, cache, r_h, r_c, eps, share, first=False):
    """Relevance of one step: from `r_h` (at h_t) and `r_c` (at c_t, from step t + 1) to
    `(r_x, r_h_prev, r_c_prev)`. `first`: the first step from a zero state, where the cell
    update has one term, $c_1 = i g$, which takes all of $R_{c_1}$."""
    hidden = p["weight_ih"].shape[0] // 4
    if "weight_hr" in p:
        r_h = lrp_linear(cache["m"], p["weight_hr"], cache["h_new"], r_h, eps)
    r_tanh_c, r_o = (1 - share) * r_h, share * r_h
    r_c = r_c + r_tanh_c
    c_new = stabilized(cache["c_new"], eps)
    r_fc = 0.0 * r_c if first else cache["f"] * cache["c"] / c_new * r_c
    r_ig = r_c if first else cache["i"] * cache["g"] / c_new * r_c
    r_c_prev, r_f = (1 - share) * r_fc, share * r_fc
    r_g, r_i = (1 - share) * r_ig, share * r_ig
    a = np.concatenate([cache["x"], cache["h"]], 1)
    w = np.concatenate([p["weight_ih"], p["weight_hh"]], 1)
    r_a = 0.0
    for k, r_gate in enumerate((r_i, r_f, r_g, r_o)):
        rows = slice(k * hidden, (k + 1) * hidden)
        r_a = r_a + lrp_linear(a, w[rows], cache["z"][k], r_gate, eps)
    inputs = cache["x"].shape[1]
    return r_a[:, :inputs], r_a[:, inputs:], r_c_prev


def gru_forward(p, x, h):
    hidden = p["weight_hh"].shape[1]
    sx = x @ p["weight_ih"].T + p["bias_ih"]
    sh = h @ p["weight_hh"].T + p["bias_hh"]
    r = sigmoid(sx[:, :hidden] + sh[:, :hidden])
    u = sigmoid(sx[:, hidden : 2 * hidden] + sh[:, hidden : 2 * hidden])
    xn, hn = sx[:, 2 * hidden :], sh[:, 2 * hidden :]
    n_pre = xn + r * hn
    n = np.tanh(n_pre)
    h_new = (1 - u) * n + u * h
    zr, zu = (
        sx[:, :hidden] + sh[:, :hidden],
        sx[:, hidden : 2 * hidden] + sh[:, hidden : 2 * hidden],
    )
    cache = {"x": x, "h": h, "r": r, "u": u, "xn": xn, "hn": hn, "n_pre": n_pre, "n": n}
    return h_new, {**cache, "zr": zr, "zu": zu, "h_new": h_new}


def gru_relevance(p, cache, r_h, eps, share, first=False):
    """As `lstm_relevance`; from a zero state $h_1 = (1 - u) n$ has one term (and without
    biases so has the candidate's pre-activation, $W_{in} x_1$)."""
    hidden = p["weight_hh"].shape[1]
    h_new = stabilized(cache["h_new"], eps)
    r_kept = r_h if first else (1 - cache["u"]) * cache["n"] / h_new * r_h
    r_carried = 0.0 * r_h if first else cache["u"] * cache["h"] / h_new * r_h
    r_n, r_keep = (1 - share) * r_kept, share * r_kept  # keep = 1 - u
    r_h_prev, r_u = (1 - share) * r_carried, share * r_carried
    n_pre = stabilized(cache["n_pre"], eps)
    r_xn = cache["xn"] / n_pre * r_n
    if first and not p["bias"]:  # W_hn h_0 + b_hn = 0: the candidate is W_in x_t alone
        r_xn = r_n
    r_rhn = cache["r"] * cache["hn"] / n_pre * r_n
    r_hn, r_r = (1 - share) * r_rhn, share * r_rhn
    # keep = 1 - u: a sum with the constant 1, in proportion (the constant's share absorbed)
    keep = 1 - cache["u"]
    r_u = r_u + (-cache["u"]) / stabilized(keep, eps) * r_keep
    rows = lambda k: slice(k * hidden, (k + 1) * hidden)  # noqa: E731
    x, h = cache["x"], cache["h"]
    r_x = lrp_linear(x, p["weight_ih"][rows(2)], cache["xn"], r_xn, eps)
    r_h_prev = r_h_prev + lrp_linear(h, p["weight_hh"][rows(2)], cache["hn"], r_hn, eps)
    a = np.concatenate([x, h], 1)
    w = np.concatenate([p["weight_ih"], p["weight_hh"]], 1)
    for k, r_gate, z in ((0, r_r, cache["zr"]), (1, r_u, cache["zu"])):
        r_a = lrp_linear(a, w[rows(k)], z, r_gate, eps)
        r_x, r_h_prev = r_x + r_a[:, : x.shape[1]], r_h_prev + r_a[:, x.shape[1] :]
    return r_x, r_h_prev


def rnn_forward(p, x, h, relu=False):
    z = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    return (np.maximum(z, 0) if relu else np.tanh(z)), {"x": x, "h": h, "z": z}


def rnn_relevance(p, cache, r_h, eps):
    a = np.concatenate([cache["x"], cache["h"]], 1)
    w = np.concatenate([p["weight_ih"], p["weight_hh"]], 1)
    r_a = lrp_linear(a, w, cache["z"], r_h, eps)
    return r_a[:, : cache["x"].shape[1]], r_a[:, cache["x"].shape[1] :]


# whole modules ---------------------------------------------------------------------------


def _sizes(module):
    hidden = module.hidden_size
    state = getattr(module, "proj_size", 0) or hidden
    return hidden, state


def sequence_relevance(module, x, r_output, eps=1e-9, share=0.0, initial=None):
    """LRP of `module` (nn.LSTM, nn.GRU or nn.RNN, batch_first=False, batched) at `x` of shape
    (T, B, I), from relevance `r_output` at its output sequence (T, B, D * H).

    `initial`: optional `(h_0, c_0)` (LSTM) or `h_0` of the module's shape; zero otherwise.
    Returns `(output, r_x)`: the module's output computed here and the input relevance.
    """
    kind = type(module).__name__
    steps, batch = x.shape[:2]
    hidden, state = _sizes(module)
    directions = 2 if module.bidirectional else 1
    layer_input = [x[t] for t in range(steps)]
    caches = []
    for layer in range(module.num_layers):
        outputs = []
        for d in range(directions):
            p = parameters(module, layer, d)
            k = layer * directions + d
            h = np.zeros((batch, state)) if initial is None else _initial(initial, kind, 0)[k]
            c = np.zeros((batch, hidden)) if initial is None or kind != "LSTM" else initial[1][k]
            order = range(steps) if d == 0 else range(steps - 1, -1, -1)
            hs, step_caches = [None] * steps, [None] * steps
            for t in order:
                if kind == "LSTM":
                    h, c, cache = lstm_forward(p, layer_input[t], h, c)
                elif kind == "GRU":
                    h, cache = gru_forward(p, layer_input[t], h)
                else:
                    h, cache = rnn_forward(p, layer_input[t], h, module.nonlinearity == "relu")
                hs[t], step_caches[t] = h, cache
            outputs.append(hs)
            caches.append((p, step_caches, order))
        layer_input = [np.concatenate([hs[t] for hs in outputs], 1) for t in range(steps)]
    output = np.stack(layer_input)
    r_layer = [r_output[t] for t in range(steps)]
    for layer in reversed(range(module.num_layers)):
        r_input = [0.0] * steps
        for d in range(directions):
            p, step_caches, order = caches[layer * directions + d]
            r_h = np.zeros((batch, state))
            r_c = np.zeros((batch, hidden))
            for t in reversed(list(order)):
                r_h = r_h + r_layer[t][:, d * state : (d + 1) * state]
                cache = step_caches[t]
                first = initial is None and t == order[0]
                if kind == "LSTM":
                    r_x, r_h, r_c = lstm_relevance(p, cache, r_h, r_c, eps, share, first)
                elif kind == "GRU":
                    r_x, r_h = gru_relevance(p, cache, r_h, eps, share, first)
                else:
                    r_x, r_h = rnn_relevance(p, cache, r_h, eps)
                r_input[t] = r_input[t] + r_x
        r_layer = r_input
    return output, np.stack(r_layer)


def _initial(initial, kind, index):
    return initial[index] if kind == "LSTM" else initial

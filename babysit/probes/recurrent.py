"""Saturation inside a recurrent layer, read off its input and its output sequence.

An LSTM's output h = o * tanh(c) hides its gates: with too large weights the gates sit at 0
or 1 (closed or open for good), and half the outputs are ~0 rather than ~+-1, so the output
alone does not show it. The gates of the first layer (forward direction) are recomputed
here from the layer's input and its own outputs h_{t-1}: torch's equations for nn.LSTM and
nn.GRU, with the initial state taken as zero (torch's default).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from babysit.nn.activations import activation_info

__all__ = ["gate_saturation"]


def _batch_first(x: Tensor, module: nn.RNNBase) -> Tensor:
    if x.dim() == 2:  # an unbatched sequence (T, features)
        return x.unsqueeze(0)
    return x if module.batch_first else x.transpose(0, 1)


def gate_saturation(module: nn.Module, inputs: tuple, output: object) -> Tensor | None:
    """The fraction of saturated gate values (sigmoid and tanh gates alike, by the
    derivative rule of `babysit.nn.activations`) of the first layer of an nn.LSTM or nn.GRU,
    on this call; None for other modules or inputs it cannot read (packed sequences, an LSTM
    with proj_size)."""
    if not isinstance(module, nn.LSTM | nn.GRU) or getattr(module, "proj_size", 0):
        return None
    if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(output, tuple):
        return None
    sequence = output[0]
    if not isinstance(sequence, Tensor) or not inputs[0].is_floating_point():
        return None
    sigmoid, tanh = activation_info("sigmoid"), activation_info("tanh")
    with torch.no_grad():
        x = _batch_first(inputs[0].detach(), module)
        h = _batch_first(sequence.detach(), module)[..., : module.hidden_size]
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        from_input = x @ module.weight_ih_l0.t()
        from_state = previous @ module.weight_hh_l0.t()
        if module.bias:
            from_input = from_input + module.bias_ih_l0
            from_state = from_state + module.bias_hh_l0
        if isinstance(module, nn.LSTM):
            i, f, g, o = (from_input + from_state).chunk(4, dim=-1)
            gates = [sigmoid.saturated(torch.sigmoid(z)) for z in (i, f, o)]
            gates.append(tanh.saturated(torch.tanh(g)))
        else:
            ir, iz, in_ = from_input.chunk(3, dim=-1)
            hr, hz, hn = from_state.chunk(3, dim=-1)
            reset = torch.sigmoid(ir + hr)
            gates = [
                sigmoid.saturated(reset),
                sigmoid.saturated(torch.sigmoid(iz + hz)),
                tanh.saturated(torch.tanh(in_ + reset * hn)),
            ]
        return torch.cat([g.reshape(-1) for g in gates]).float().mean()

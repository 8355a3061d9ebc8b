"""The layer roles the Monitor judges update ratios by, read as the checkup reads them
(`babysit.probes.graph`): which weights are the query, key and value projections of one
attention (measured as one ratio), and which layers' outputs reach a normalization through
sums (never judged "too high").

No extra forward pass: the roles are read from the graph of the first training forward the
Monitor sees. Hooks record the autograd node of each layer's output, of each normalization's
input and of the model's outputs during the step; at the step's `mon.step` the graph behind
the outputs is walked once (on the host, no device sync) and the nodes are dropped. Under
`torch.compile` the layers run inside the compiled graph, where the hooks record nothing:
the roles come from the Monitor's eager probe of the first step (`babysit.train.compiled`),
whose hooks see the layers. A step whose forward recorded no graph (every output detached
or computed without gradients) leaves the roles to the next step.
"""

from __future__ import annotations

import math

from torch import nn

from babysit.nn.layers import layer_weights, parameterised_layers, weight_matrix
from babysit.probes.graph import RoleRecorder
from babysit.train.measuring import default_square_norm

__all__ = ["RunRoles", "default_norms"]


class RunRoles:
    """The attention groups and normalized layers of a watched model, by parameter name:
    `groups` maps an attention (the module holding its projections) to the names of its
    projections' weight parameters; `normalized` holds the weight (and gain) parameters of
    the layers whose output reaches a normalization. `read` is False until they are read."""

    def __init__(self, model: nn.Module, compiled: bool = False):
        self.model = model
        self.compiled = compiled
        self.groups: dict[str, list[str]] = {}
        self.normalized: list[str] = []
        self.read = False
        self._recorder: RoleRecorder | None = None

    def attach(self) -> None:
        if not self.read and self._recorder is None:
            self._recorder = RoleRecorder(self.model).attach()

    def remove(self) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None

    def end_step(self) -> bool:
        """Read the roles from the graph recorded during this step, if it recorded one;
        True when they were read on this call."""
        recorder = self._recorder
        if recorder is None or self.read:
            return False
        if not recorder.roots:
            recorder.clear()
            return False
        roles = recorder.roles()
        recorder.clear()
        recorder.enabled = False
        if not self.compiled:  # a compiled graph would recompile without the hooks
            self.remove()
        weights = {
            name: [f"{name}.{local}" for local, _ in layer_weights(module)]
            for name, module in recorder.layers.items()
        }
        self.groups = {
            group: [p for layer in members for p in weights[layer]]
            for group, members in roles.attention.items()
        }
        self.normalized = sorted(p for layer in roles.normalized for p in weights[layer])
        self.read = True
        return True

    def as_record(self) -> dict[str, object]:
        """The roles as the history stores them (`roles` in the Monitor's records)."""
        attention = {group: list(params) for group, params in self.groups.items()}
        return {"attention": attention, "normalized": list(self.normalized)}


def default_norms(model: nn.Module) -> dict[str, float]:
    """Per weight-layer weight parameter, its norm under torch's default init (U(-b, b),
    b = 1/sqrt(fan_in): sqrt(out / 3); `babysit.train.measuring.default_square_norm`, which the
    checkup's `UpdateRatioLog` reads too)."""
    return {
        f"{name}.weight": math.sqrt(default_square_norm(module))
        for name, module in parameterised_layers(model)
        if weight_matrix(module) is not None
    }

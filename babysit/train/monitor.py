"""Monitor: watch any PyTorch training loop, cheaply enough to leave on.

    with Monitor(model, optimizer) as mon:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            mon.step(loss)
    mon.save_jsonl("history.jsonl")

It records the loss of every step; on probe steps (the first step, then every `every`
steps) the per-layer activation and gradient statistics and the per-parameter
update/weight ratio; and it guards the run: a non-finite loss is reported with the layer
whose outputs (or gradients) first became non-finite, the first in forward order (an RNN's
or attention's output is its first tensor: the output sequence, the attended values), and a
loss above `abort_factor` x the first step's loss is flagged (CS231n notes, Part 3: "if the
cost is ever > 3 * original cost, break out early"). It measures; judging the numbers is
left to `babysit.checks`.

The Monitor is built from quantities (`babysit.train.quantities`: loss, layer statistics,
update ratios; `babysit.train.guards`: the non-finite and explosion guards), each scheduled
and read back the same way; the records and their JSON Lines live in `babysit.train.records`.

Cost: the loss, the min/max of the outputs and gradients of the non-activation layers
(for the non-finite guard) and the probe statistics stay on the device; they are read back
once every `read_every` steps (default: `every`), so there is no host sync per step.
Statistics are taken on the first `sample` examples of the batch (dead fractions on the
whole batch). See bench/monitor_overhead.py for the measured cost at the defaults and at
every=1.

History records, one per step, in order (`mon.history`, and one JSON object per line in
`save_jsonl`). Non-finite numbers are stored as null.

    step            int, 1-based count of `mon.step` calls (optimizer steps)
    loss            float | null, this step's loss
    train_accuracy, val_accuracy, and any other metric given to `step` or `log`: float
    gap             train_accuracy - val_accuracy, when both are in the record
    layers          probe steps only: a list, in forward order, of dicts with the fields of
                    `babysit.probes.LayerStats` (name, kind, activation, depth, mean, std,
                    min, max, nonfinite, histogram, histogram_range, dead_fraction,
                    saturated_fraction, grad_std, grad_nonfinite, weight_std,
                    weight_grad_norm); a layer not run on that step is left out
    update_ratios   probe steps with an optimizer: {parameter name: ||dW|| / ||W||}, null
                    where ||W|| was 0 (a zero-initialised bias, before its first update)
    update_ratio_groups  with update_ratios, where an attention has separate query/key/value
                    projections: {attention: ||dW|| / ||W|| over their weights together}
    below_default_scale  with update_ratios: {weight: ||W|| / torch's default init norm},
                    for the Linear/Conv weights below that norm
    roles           once, in the first record with update_ratios: {"attention": {attention:
                    [weight names]}, "normalized": [parameter names]} (`babysit.train.roles`)
    alerts          when a guard tripped on this step: a list of dicts with "guard"
                    ("nonfinite_loss" or "loss_exploded") and "message"; nonfinite_loss adds
                    "layer" (str | null), "where" ("output", "gradient" or "loss") and
                    "onset_step"; loss_exploded adds "initial_loss" and "factor"
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from babysit.errors import UsageError
from babysit.nn.activations import activation_info
from babysit.probes import HISTOGRAM_BINS, Hooks, select_layers
from babysit.train.arguments import check_metric, positive_int, rank_and_size, scalar
from babysit.train.callbacks import Callback
from babysit.train.compiled import SampleCapture, unwrap_compiled
from babysit.train.divergence import LOSS_ABORT_FACTOR
from babysit.train.guards import ExplosionGuard, NonFiniteGuard
from babysit.train.loop_facts import LoopFacts
from babysit.train.quantities import LayerStatistics, Loss, Quantity, UpdateRatios, serial
from babysit.train.records import (
    RESERVED,
    first_layer_filters,
    gap,
    host,
    load_history,
    save_history,
)
from babysit.train.roles import RunRoles, default_norms

__all__ = [
    "DEFAULT_EVERY",
    "DEFAULT_SAMPLE",
    "Monitor",
    "TrainingStopped",
    "load_history",
]

# Probe cadence. Measured with bench/monitor_overhead.py --threads 1 (3-conv CNN, batch 128,
# CPU time, so that the loaded shared machine does not blur it): all probes every step cost
# 4-8% of a step, at the edge of a 5% budget; every 10th step costs ~1% (the per-step guard
# plus a tenth of the probes) and still gives 100 probe points per 1,000 steps, enough to
# plot a trend.
DEFAULT_EVERY = 10
# Examples per batch the statistics are taken on. Measured: hooks taking mean, std,
# histogram and dead fraction at every ReLU cost ~1.5x a step on the whole batch of 128,
# ~1.08x on 16 of them; 16 images x 32 x 32 positions still give a smooth histogram.
DEFAULT_SAMPLE = 16


class TrainingStopped(RuntimeError):
    """Raised by `Monitor.step` when a guard trips and `stop_on_abort=True`. The Monitor's
    own `with` block swallows it, so a loop inside the block ends there."""

    def __init__(self, reason: str, monitor: Monitor):
        super().__init__(reason)
        self.monitor = monitor


@dataclass
class _Pending:
    """A finished step whose numbers are still on the device: every quantity's tensors,
    packed into one flat tensor, and where each lies in it."""

    step: int
    layout: list[tuple[int, Any, int]]  # (quantity index, key, size)
    packed: Tensor
    metrics: dict[str, Any]
    host: list[tuple[int, Any, Any]]  # (quantity index, key, value): numbers already on the host


class Monitor(Callback):
    """Records loss, accuracies, per-layer statistics and update ratios of a training loop,
    and guards it against non-finite and exploding losses.

    Use as a context manager around any loop and call `step(loss)` once per optimizer step,
    after `optimizer.step()`; or pass it to `babysit.train.fit(callbacks=[...])`.
    `optimizer` enables update/weight ratios (measured around `optimizer.step()` by torch's
    step hooks, so for any optimizer). `layers` picks the modules to watch (names or types,
    as `babysit.probes.select_layers`; default every layer of the kinds in
    `babysit.nn.layers`: Linear/Conv, transformers' Conv1D, Embedding, RNN/LSTM/GRU,
    MultiheadAttention, normalization, and every activation). `sample`
    examples per batch feed the statistics and the non-finite check (None: the whole batch,
    exact but dearer). With `stop_on_abort`, a tripped guard raises `TrainingStopped` from
    `step` (ending the `with` block) or stops `fit`. `log_dir` also writes TensorBoard event
    files (scalars and histograms).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = DEFAULT_EVERY,
        read_every: int | None = None,
        layers: Iterable[str | type] | None = None,
        sample: int | None = DEFAULT_SAMPLE,
        histograms: bool = True,
        bins: int = HISTOGRAM_BINS,
        abort_factor: float = LOSS_ABORT_FACTOR,
        stop_on_abort: bool = False,
        log_dir: str | os.PathLike | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise UsageError(f"Monitor needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(
                f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
            )
        self.every = positive_int(every, "every")
        self.read_every = (
            self.every if read_every is None else positive_int(read_every, "read_every")
        )
        self.sample = None if sample is None else positive_int(sample, "sample")
        self.bins = positive_int(bins, "bins")
        if not (isinstance(abort_factor, int | float) and abort_factor > 1):
            raise UsageError(f"abort_factor must be a number > 1, got {abort_factor!r}")
        # A torch.compile'd model: watch the module inside, probe it outside the graph.
        model, wrapper = unwrap_compiled(model)
        self.model = model
        self._capture = None if wrapper is None else SampleCapture(wrapper, model, self.sample)
        self.histograms = histograms
        self.abort_factor = float(abort_factor)
        self.stop_on_abort = stop_on_abort
        self.log_dir = log_dir
        if log_dir is not None:
            from babysit.train.tensorboard import check_log_dir

            check_log_dir(log_dir)
        try:
            self.layers = select_layers(model, layers)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self._names = [name for name, _ in self.layers]
        self._index = {name: i for i, name in enumerate(self._names)}
        infos = [activation_info(m) for _, m in self.layers]
        guarded = [i for i, info in enumerate(infos) if info is None]
        # Layer index -> rank of its first call: the forward order, which the records list
        # and the guard names the first non-finite layer by (registration order may differ).
        self._forward_order: dict[int, int] = {}
        self._statistics = LayerStatistics(
            self.layers, infos, self.every, histograms, self.bins, self._forward_order
        )
        self._ratios = UpdateRatios(self.every)
        self._roles = RunRoles(model, compiled=wrapper is not None)
        self._loop = LoopFacts(model, self.layers, self.every)
        self._nonfinite = NonFiniteGuard(
            self._names,
            guarded if guarded else list(range(len(self.layers))),
            self.sample,
            compiled=wrapper is not None,
            order=self._forward_order,
        )
        # Read back in this order: the guards read the loss and add their alerts last.
        self.quantities: list[Quantity] = [
            Loss(),
            self._statistics,
            self._ratios,
            self._loop,
            self._nonfinite,
            ExplosionGuard(self.abort_factor),
        ]
        self._layer_quantities = [self._statistics, self._nonfinite, self._loop]

        self.alerts: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self._records: list[dict[str, Any]] = []
        self._pending: list[_Pending] = []
        self._step = 0
        self._raised = False
        self._forwards = 0  # training forward passes seen through a watched layer
        self._hooks: Hooks | None = None
        self._optimizer_handles: list = []
        self._attached_by_fit = False
        self._writer = None
        self._begin_step()
        self.optimizer: torch.optim.Optimizer | None = None
        if optimizer is not None:
            self._set_optimizer(optimizer)

    # -- attaching ---------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self._hooks is not None

    def attach(self) -> Monitor:
        """Install the hooks (what `with` does); idempotent."""
        if self._hooks is not None:
            return self
        if self.log_dir is not None and self._writer is None:
            from babysit.train.tensorboard import TensorBoardLog

            self._writer = TensorBoardLog(self.log_dir)
        self._hooks = Hooks(self.layers, forward=self._on_forward)
        if self._capture is not None:
            self._capture.attach()
        self._roles.attach()
        self._hook_optimizer()
        return self

    def detach(self) -> None:
        """Read back what is pending, remove every hook and close the TensorBoard files.
        Warns when the Monitor saw training but no step, or an optimizer that never stepped."""
        try:
            if self._hooks is not None:
                self.flush()
                problem = self._unseen_steps()
                if problem is not None:
                    warnings.warn(f"babysit Monitor: {problem}", RuntimeWarning, stacklevel=3)
        finally:
            if self._hooks is not None:
                self._hooks.remove()
                self._hooks = None
            if self._capture is not None:
                self._capture.remove()
            self._roles.remove()
            self._unhook_optimizer()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> Monitor:
        return self.attach()

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self.detach()
        return isinstance(exc, TrainingStopped) and exc.monitor is self

    def _set_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [(n, p) for n, p in self.model.named_parameters() if id(p) in owned]
        if not params:
            raise UsageError(
                "the optimizer holds none of the model's parameters; pass the optimizer "
                "that trains this model"
            )
        self._unhook_optimizer()
        self.optimizer, self._ratios.params = optimizer, params
        self._ratios.floors = default_norms(self.model)
        if self._roles.read:
            self._ratios.set_roles(self._roles.groups, self._roles.as_record())
        self._loop.set_optimizer(optimizer, owned)
        if self.attached:
            self._hook_optimizer()

    def _hook_optimizer(self) -> None:
        if self.optimizer is not None and not self._optimizer_handles:
            self._optimizer_handles = [
                self.optimizer.register_step_pre_hook(self._before_update),
                self.optimizer.register_step_post_hook(self._after_update),
            ]

    def _unhook_optimizer(self) -> None:
        for handle in self._optimizer_handles:
            handle.remove()
        self._optimizer_handles = []

    # -- during a step: hooks (everything stays on the device) --------------------------------

    def _begin_step(self) -> None:
        for quantity in self.quantities:
            quantity.begin_step(self._step + 1)
        if self._capture is not None:
            self._capture.wanted = self._statistics.active

    def _sampled(self, x: Tensor) -> Tensor:
        x = x.detach()
        return x[: self.sample] if self.sample is not None and x.dim() > 0 else x

    def _on_forward(self, name: str, module: nn.Module, output: Tensor) -> None:
        if torch.compiler.is_compiling():
            return  # nothing inside a compiled graph: see babysit.train.compiled
        if not torch.is_grad_enabled() or not output.is_floating_point():
            return  # evaluation passes are not part of the training step
        self._forwards += 1
        i = self._index[name]
        if i not in self._forward_order:
            self._forward_order[i] = len(self._forward_order)
        wanting = [q for q in self._layer_quantities if q.watches(i)]
        part = self._sampled(output)
        if part.numel() == 0 or not wanting:
            return
        with serial(part):
            low, high = torch.aminmax(part)  # NaN propagates through both: the finite check
            for quantity in wanting:
                quantity.on_output(i, module, output, part, low, high)
        if output.requires_grad:
            output.register_hook(partial(self._on_gradient, i))

    def _on_gradient(self, i: int, grad: Tensor) -> None:
        if torch.compiler.is_compiling():
            return
        wanting = [q for q in self._layer_quantities if q.watches(i)]
        part = self._sampled(grad)
        if part.numel() == 0 or not wanting:
            return
        with serial(part):
            low, high = torch.aminmax(part)
            for quantity in wanting:
                quantity.on_gradient(i, part, low, high)

    def _before_update(self, optimizer, args, kwargs) -> None:
        with serial(self._ratios.params[0][1]):
            for quantity in self.quantities:
                quantity.before_update()

    def _after_update(self, optimizer, args, kwargs) -> None:
        with serial(self._ratios.params[0][1]):
            for quantity in self.quantities:
                quantity.after_update()

    # -- the user's calls ----------------------------------------------------------------------

    def step(
        self,
        loss: Tensor | float,
        train_accuracy: Tensor | float | None = None,
        val_accuracy: Tensor | float | None = None,
    ) -> None:
        """Record one optimizer step: call it after `optimizer.step()`. Accuracies are
        fractions in [0, 1] (floats or device tensors). Reads back every `read_every` steps;
        with `stop_on_abort`, raises TrainingStopped once a guard has tripped."""
        metrics = {"train_accuracy": train_accuracy, "val_accuracy": val_accuracy}
        self._advance(loss, {k: v for k, v in metrics.items() if v is not None})
        if self.stop_on_abort and self.should_stop and not self._raised:
            self._raised = True
            raise TrainingStopped(self.stop_reason, self)

    def log(self, **metrics: Tensor | float) -> None:
        """Add metrics measured outside the step (an epoch's validation accuracy, the epoch
        number) to the latest step's record."""
        if self._step == 0:
            raise UsageError("Monitor.log was called before the first Monitor.step; call it after")
        reserved = sorted(RESERVED & set(metrics))
        if reserved:
            raise UsageError(
                f"Monitor.log: {', '.join(reserved)} cannot be logged; it is set by the Monitor"
            )
        for key, value in metrics.items():
            check_metric(key, value)
        if self._pending:
            self._pending[-1].metrics.update(metrics)
            return
        record = self._records[-1]
        added = {k: host(v) for k, v in metrics.items()}
        record.update(added)
        if "train_accuracy" in record and "val_accuracy" in record:
            added["gap"] = record["gap"] = gap(record)
        if self._writer is not None:
            self._writer.write_scalars(record["step"], added)

    def flush(self) -> None:
        """Read back everything pending now (one host sync) and run the guards on it."""
        self._read_back()

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per step so far (see the module docstring); reading it flushes."""
        self.flush()
        return self._records

    @property
    def should_stop(self) -> bool:
        """True once a guard has tripped, as of the last read-back."""
        return self.stop_reason is not None

    @property
    def steps(self) -> int:
        return self._step

    @property
    def optimizer_steps(self) -> int:
        """How many times the watched optimizer's `step()` ran while attached."""
        return self._ratios.optimizer_steps

    def _unseen_steps(self) -> str | None:
        """What the Monitor could not see, in words, or None."""
        if self._step == 0 and self._forwards:
            return (
                f"saw {self._forwards} training forward passes but no mon.step(loss), so "
                "nothing was recorded; call mon.step(loss) after optimizer.step() (with "
                "Lightning or a Hugging Face Trainer, use babysit.integrations' MonitorCallback)"
            )
        if self.optimizer is not None and self._step and self.optimizer_steps == 0:
            return (
                f"the optimizer given never stepped in {self._step} steps, so no update "
                "ratio was measured; pass the optimizer that trains the model"
            )
        return None

    def report(self, **meta: Any):
        """A `babysit.Report` about the run so far (callable mid-run and at the end):
        findings with code, severity, evidence and fix (`babysit.checks.training_run`);
        `meta` adds to the report's meta (e.g. ranks)."""
        from babysit.checks.training_run import check_training_run
        from babysit.report.training_run import RunReport

        rank, ranks = rank_and_size()
        info = {
            "kind": "training_run",
            "ranks": ranks,
            "rank": rank,
            "steps": self._step,
            "optimizer": self.optimizer is not None,
            "optimizer_steps": self.optimizer_steps,
            "every": self.every,
            **meta,
        }
        findings, measured = check_training_run(self.history, meta=info)
        problem = self._unseen_steps()
        if problem is not None and self._step == 0:
            findings[0] = dataclasses.replace(findings[0], message=problem)
        first = first_layer_filters(self.model)
        if first is not None:
            measured["first_layer"] = first
        return RunReport(findings, {"training_run": measured}, info, self.history)

    def save_jsonl(self, path: str | os.PathLike) -> Path:
        """Write the history as JSON Lines, atomically (a crash never leaves half a file).
        Under torch.distributed only rank 0 writes (one history per run); other ranks
        return the path without writing."""
        records = self.history
        if rank_and_size()[0] != 0:
            return Path(path)
        return save_history(path, records)

    # -- as a callback of babysit.train.fit ---------------------------------------------------

    def on_train_begin(self, state) -> None:
        if self.optimizer is not state.optimizer:
            self._set_optimizer(state.optimizer)
        if not self.attached:
            self.attach()
            self._attached_by_fit = True

    def on_batch_end(self, state, loss: Tensor) -> None:
        self._advance(loss, {})
        if self.stop_on_abort and self.should_stop:
            state.stop(self.stop_reason)

    def on_epoch_end(self, state, metrics: dict[str, float]) -> None:
        self.log(**{k: v for k, v in metrics.items() if k not in RESERVED})

    def on_train_end(self, state) -> None:
        self.flush()
        if self.stop_on_abort and self.should_stop:
            state.stop(self.stop_reason)
        if self._attached_by_fit:
            self._attached_by_fit = False
            self.detach()

    # -- bookkeeping ------------------------------------------------------------------------

    def _advance(self, loss: Tensor | float, metrics: dict[str, Any]) -> None:
        if not self.attached:
            raise UsageError(
                "Monitor.step was called on a detached Monitor; use it as `with Monitor(...) "
                "as mon:` (or call mon.attach()) before the training loop"
            )
        loss = scalar(loss, "loss", self.model)
        for key, value in metrics.items():
            check_metric(key, value)
        if self._capture is not None and self._statistics.active:
            self._capture.rerun()  # a compiled model's probe, outside its graph
        if self._roles.end_step():  # read from this step's graph, once
            self._ratios.set_roles(self._roles.groups, self._roles.as_record())
        self._step += 1
        layout: list[tuple[int, Any, int]] = []
        tensors: list[Tensor] = []
        on_host: list[tuple[int, Any, Any]] = []
        with serial(loss):
            for index, quantity in enumerate(self.quantities):
                for key, value in quantity.end_step(loss).items():
                    if isinstance(value, Tensor):
                        layout.append((index, key, value.numel()))
                        tensors.append(value.detach().reshape(-1).float())
                    else:
                        on_host.append((index, key, value))
            packed = torch.cat(tensors)
        self._pending.append(_Pending(self._step, layout, packed, metrics, on_host))
        self._begin_step()
        if self._step % self.read_every == 0:
            self._read_back()

    def _read_back(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        flat = torch.cat([p.packed for p in pending]).tolist()  # the one host sync
        offset = 0
        for item in pending:
            values: list[dict[Any, list[float]]] = [{} for _ in self.quantities]
            for index, key, size in item.layout:
                values[index][key] = flat[offset : offset + size]
                offset += size
            for index, key, value in item.host:
                values[index][key] = value
            self._records.append(self._record(item, values))

    def _record(self, item: _Pending, values: list[dict[Any, list[float]]]) -> dict[str, Any]:
        record: dict[str, Any] = {"step": item.step}
        self.quantities[0].read(record, values[0])  # the loss first, then the metrics
        record.update({k: host(v) for k, v in item.metrics.items()})
        if "train_accuracy" in record and "val_accuracy" in record:
            record["gap"] = gap(record)
        for quantity, own in zip(self.quantities[1:], values[1:], strict=True):
            quantity.read(record, own)
        for alert in record.get("alerts", ()):
            self.alerts.append(alert)
            if self.stop_reason is None:
                self.stop_reason = alert["message"]
        if self._writer is not None:
            self._writer.write(record)
        return record

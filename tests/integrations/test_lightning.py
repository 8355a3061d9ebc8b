"""MonitorCallback end-to-end with the real PyTorch Lightning on CPU: a tiny module, a few
dozen steps, nothing downloaded."""

import json

import pytest
import torch
from torch import nn

pl = pytest.importorskip("pytorch_lightning")

from babysit.integrations.lightning import MonitorCallback  # noqa: E402
from babysit.train import load_history  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self, lr=0.05, zero_grad=True):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def _loaders(n=512, batch=16):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 3
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + torch.randn(n, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    train, val = torch.utils.data.random_split(data, [n - 128, 128], generator=g)
    return (
        torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, generator=g),
        torch.utils.data.DataLoader(val, batch_size=64),
    )


def _fit(tmp_path, callback, accumulate=1, epochs=2, limit=24):
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        accumulate_grad_batches=accumulate,
        callbacks=[callback],
        limit_train_batches=limit,
        logger=pl.loggers.CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train, val = _loaders()
    trainer.fit(Classifier(), train, val)
    return trainer


def test_the_callback_records_every_batch_and_writes_the_run_to_the_log_dir(tmp_path):
    callback = MonitorCallback(every=5)
    trainer = _fit(tmp_path, callback)
    folder = trainer.log_dir
    history = load_history(f"{folder}/history.jsonl")
    assert [r["step"] for r in history] == list(range(1, 2 * 24 + 1))
    assert [r["step"] for r in history if "update_ratios" in r] == list(range(1, 48, 5))
    ends = [r for r in history if "val_accuracy" in r]
    assert [r["epoch"] for r in ends] == [1, 2] and ends[-1]["val_accuracy"] > 0.8
    report = json.loads((tmp_path / folder / "report.json").read_text())
    assert report["meta"]["kind"] == "training_run" and report["meta"]["ranks"] == 1
    assert [f for f in report["findings"] if f["severity"] != "info"] == []
    assert callback.report.codes == [f["code"] for f in report["findings"]]


def test_update_ratios_survive_accumulate_grad_batches(tmp_path):
    """With accumulate_grad_batches=2 the optimizer steps on every 2nd batch; the Monitor
    counts optimizer steps, so the ratios are there (they silently vanished before)."""
    callback = MonitorCallback(every=5)
    trainer = _fit(tmp_path, callback, accumulate=2)
    history = callback.monitor.history
    assert callback.monitor.optimizer_steps == trainer.global_step == 24
    measured = [r["step"] for r in history if "update_ratios" in r]
    assert len(measured) == 5 and all(step % 2 == 0 for step in measured)
    assert [f for f in callback.report.findings if f.severity != "info"] == []


def test_a_monitor_wrapped_around_fit_without_the_callback_says_so(tmp_path):
    from babysit.train import Monitor

    module = Classifier()
    train, val = _loaders()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.warns(RuntimeWarning, match="MonitorCallback"), Monitor(module):
        trainer.fit(module, train, val)


def test_the_documented_examples_run(tmp_path, monkeypatch):
    """The Lightning and Hugging Face examples of docs/monitor.md run as written."""
    import re
    from pathlib import Path

    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    text = (Path(__file__).parents[2] / "docs" / "monitor.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "integrations" in b]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        namespace = {}
        exec(compile(block, "docs/monitor.md", "exec"), namespace)
        assert [f for f in namespace["callback"].report.findings if f.severity != "info"] == []
    assert (tmp_path / "runs" / "hf" / "report.html").is_file()

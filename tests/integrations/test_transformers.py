"""MonitorCallback end-to-end with the real Hugging Face Trainer on CPU: a tiny BERT built
from a config (nothing downloaded), a few dozen steps."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from babysit.integrations.transformers import MonitorCallback  # noqa: E402
from babysit.train import load_history  # noqa: E402


def _data(n, seed):
    """Token sequences whose label is whether token 7 appears: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 20, (n, 12), generator=g)
    labels = (ids == 7).any(dim=1).long()
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]


def _accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def _train(tmp_path, accumulate=1, **callback_kwargs):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=5e-3,
        gradient_accumulation_steps=accumulate,
        eval_strategy="epoch",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    callback = MonitorCallback(**callback_kwargs)
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_data(192, 0),
        eval_dataset=_data(64, 1),
        compute_metrics=_accuracy,
        callbacks=[callback],
    )
    trainer.train()
    return trainer, callback


def test_the_callback_records_each_optimizer_step_and_writes_the_run(tmp_path):
    trainer, callback = _train(tmp_path, every=4)
    history = load_history(tmp_path / "history.jsonl")
    assert [r["step"] for r in history] == list(range(1, trainer.state.global_step + 1))
    assert len(history) == 2 * 192 // 8
    assert all(r["loss"] is not None for r in history)
    assert [r["step"] for r in history if "update_ratios" in r] == list(range(1, 49, 4))
    assert len([r for r in history if "val_accuracy" in r]) == 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["meta"]["integration"] == "transformers" and report["meta"]["ranks"] == 1
    assert callback.report.codes == [f["code"] for f in report["findings"]]
    assert (tmp_path / "report.html").is_file()


def test_gradient_accumulation_gives_one_step_per_optimizer_step(tmp_path):
    trainer, callback = _train(tmp_path, accumulate=2, every=2)
    history = callback.monitor.history
    assert len(history) == trainer.state.global_step == callback.monitor.optimizer_steps == 24
    assert len([r for r in history if "update_ratios" in r]) == 12

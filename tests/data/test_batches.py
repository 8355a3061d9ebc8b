"""babysit.data.batches: any batch (tensor, tuple, dict inputs; per-example or per-position
targets), any output (tensor, tuple, dict, ModelOutput)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from babysit.data import as_tensors
from babysit.data.batches import (
    batch_size,
    call_model,
    collate,
    concat,
    describe,
    integer_inputs,
    main_input,
    model_output,
    read_output,
    sample,
    select,
    split_item,
    stack,
    to_device,
    to_tensor,
)
from babysit.errors import UsageError


class BertItems(Dataset):
    """Hugging Face style items: ({"input_ids", "attention_mask"}, label), NumPy inside."""

    def __init__(self, n=10, length=6):
        rng = np.random.default_rng(0)
        self.ids = rng.integers(0, 50, size=(n, length))
        self.labels = rng.integers(0, 3, size=n)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        inputs = {"input_ids": self.ids[i], "attention_mask": np.ones_like(self.ids[i])}
        return inputs, int(self.labels[i])


def test_collate_stacks_dict_inputs_that_as_tensors_cannot():
    data = BertItems()
    with pytest.raises(UsageError, match="cannot stack"):
        as_tensors(data)  # the "cannot stack ... numpy.object_"
    inputs, targets = collate([data[i] for i in range(len(data))])
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].dtype == torch.int64
    assert torch.equal(inputs["input_ids"], torch.as_tensor(data.ids))
    assert torch.equal(targets, torch.as_tensor(data.labels))


def test_collate_reads_labels_from_a_hugging_face_dict_item():
    items = [{"input_ids": torch.arange(4) + i, "labels": torch.arange(4) + i} for i in range(3)]
    inputs, targets = collate(items)
    assert set(inputs) == {"input_ids"} and targets.shape == (3, 4)
    assert torch.equal(targets[2], torch.arange(4) + 2)


def test_collate_stacks_tuple_inputs_entry_by_entry():
    items = [((torch.full((3,), i), torch.tensor(float(i))), i) for i in range(4)]
    (a, b), y = collate(items)
    assert a.shape == (4, 3) and b.shape == (4,) and torch.equal(y, torch.arange(4))


def test_a_list_of_numbers_is_one_input_not_a_tuple():
    inputs, _ = collate([([1.0, 2.0, 3.0], 0), ([4.0, 5.0, 6.0], 1)])
    assert isinstance(inputs, torch.Tensor) and inputs.shape == (2, 3)


def test_stack_names_the_example_whose_shape_differs():
    with pytest.raises(UsageError, match=r"example 2 is \(5,\)"):
        stack([torch.zeros(4), torch.zeros(4), torch.zeros(5)])
    with pytest.raises(UsageError, match="same keys"):
        stack([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])


def test_split_item_rejects_a_bare_input():
    with pytest.raises(UsageError, match="not an .inputs, targets. pair"):
        split_item(torch.zeros(3), 7)
    with pytest.raises(UsageError, match="no 'labels'"):
        split_item({"input_ids": torch.zeros(3)})


def test_to_tensor_keeps_integer_ids_integer_and_refuses_strings():
    assert to_tensor(np.array([1, 2], dtype=np.int32)).dtype == torch.int32
    assert to_tensor([3, 4]).dtype == torch.int64
    with pytest.raises(UsageError, match="must be numbers"):
        to_tensor(["cat", "dog"])


def test_as_tensors_keeps_integer_inputs_integer():
    ids = torch.randint(0, 100, (8, 5))
    y = torch.randint(0, 3, (8,))
    for data in (
        TensorDataset(ids, y),
        (ids, y),
        (ids.numpy(), y.numpy()),
        list(zip(ids, y, strict=True)),
    ):
        x, _ = as_tensors(data)
        assert x.dtype == torch.int64 and torch.equal(x, ids)


def test_select_batch_size_and_device_walk_every_tensor():
    inputs = {"input_ids": torch.arange(12).reshape(6, 2), "mask": torch.ones(6, 2)}
    picked = select(inputs, torch.tensor([5, 0]))
    assert torch.equal(picked["input_ids"], torch.tensor([[10, 11], [0, 1]]))
    assert batch_size(picked) == 2
    moved = to_device(picked, "cpu")
    assert moved["mask"].dtype == torch.float32
    assert batch_size(concat([picked, picked])) == 4
    with pytest.raises(UsageError, match="disagree"):
        batch_size({"a": torch.zeros(3, 1), "b": torch.zeros(4, 1)})


def test_integer_inputs_judge_the_main_input_not_the_mask():
    ids = torch.randint(0, 9, (4, 3))
    assert integer_inputs(ids)
    assert not integer_inputs(torch.randn(4, 3))
    assert integer_inputs({"attention_mask": torch.ones(4, 3), "input_ids": ids})
    assert not integer_inputs({"pixel_values": torch.randn(4, 3), "mask": ids})
    assert main_input((ids, torch.randn(4))) is ids
    assert describe({"input_ids": ids}) == "{input_ids: (4, 3) int64}"


def test_sample_draws_the_same_examples_from_every_form_of_the_data():
    x = torch.randn(30, 4)
    y = torch.randint(0, 3, (30,))
    drawn, drawn_y, index = sample(TensorDataset(x, y), limit=7, seed=3)
    assert torch.equal(drawn, x[index]) and torch.equal(drawn_y, y[index])
    items = list(zip(x, y, strict=True))
    again, again_y, again_index = sample(items, limit=7, seed=3)
    assert torch.equal(again_index, index) and torch.equal(again, drawn)
    whole, _, whole_index = sample((x, y))
    assert torch.equal(whole, x) and torch.equal(whole_index, torch.arange(30))


def test_sample_reads_a_dataloader_and_an_iterable_up_to_the_limit():
    x, y = torch.randn(25, 2), torch.arange(25)
    got, got_y, index = sample(DataLoader(TensorDataset(x, y), batch_size=10), limit=12)
    assert index is None and torch.equal(got, x[:12]) and torch.equal(got_y, y[:12])

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(x, y, strict=True))

    got, got_y, index = sample(Stream(), limit=5)
    assert index is None and torch.equal(got_y, y[:5])


def test_a_dataloader_over_three_tensors_reads_as_the_tensor_dataset_does():
    """TensorDataset(a, b, y) is ((a, b), y) whether read in place, item by item or through
    a DataLoader's [a, b, y] batches."""
    a, b, y = torch.randn(12, 3), torch.randint(0, 5, (12,)), torch.arange(12)
    data = TensorDataset(a, b, y)
    (in_place, in_place_y, _), (loaded, loaded_y, _) = (
        sample(data),
        sample(DataLoader(data, batch_size=5)),
    )
    items, items_y = collate([data[i] for i in range(12)])
    for inputs, targets in ((in_place, in_place_y), (loaded, loaded_y), (items, items_y)):
        assert isinstance(inputs, tuple) and torch.equal(inputs[0], a)
        assert torch.equal(inputs[1], b) and torch.equal(targets, y)


def test_sample_of_a_dataloader_of_dicts_keeps_the_dict():
    data = BertItems(n=9)
    inputs, targets, _ = sample(DataLoader(data, batch_size=4))
    assert inputs["input_ids"].shape == (9, 6) and targets.shape == (9,)


def test_sample_accepts_per_position_targets_and_refuses_a_length_mismatch():
    ids = torch.randint(0, 10, (6, 8))
    _, targets, _ = sample((ids, ids.roll(-1, dims=1)))
    assert targets.shape == (6, 8)
    with pytest.raises(UsageError, match="6 inputs but targets of shape"):
        sample((ids, torch.zeros(5)))


def test_a_tensor_dataset_of_three_tensors_gives_tuple_inputs():
    ids, mask, y = torch.zeros(4, 3, dtype=torch.long), torch.ones(4, 3), torch.zeros(4)
    inputs, targets, _ = sample(TensorDataset(ids, mask, y))
    assert isinstance(inputs, tuple) and len(inputs) == 2 and targets is not None


class Echo(nn.Module):
    def forward(self, a, b=None, *, extra=None):
        return a if b is None else a + b


def test_call_model_spreads_tuples_and_dicts():
    a, b = torch.ones(2), torch.full((2,), 2.0)
    assert torch.equal(call_model(Echo(), a), a)
    assert torch.equal(call_model(Echo(), (a, b)), a + b)
    assert torch.equal(call_model(Echo(), {"a": a, "b": b}), a + b)


def test_read_output_finds_the_scores():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    logits = torch.randn(2, 3, 5)
    assert read_output(logits) is logits
    assert read_output((logits, (torch.zeros(1), torch.zeros(1)))) is logits  # an LSTM's
    assert read_output({"loss": torch.tensor(1.0), "logits": logits}) is logits
    assert read_output(CausalLMOutputWithPast(logits=logits)) is logits
    with pytest.raises(UsageError, match="no 'logits'.*forward="):
        read_output({"hidden": logits})
    with pytest.raises(UsageError, match="forward="):
        read_output(None)


def test_model_output_uses_the_forward_keyword():
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    assert model_output(lstm, x).shape == (2, 5, 4)
    last = model_output(lstm, x, forward=lambda m, inputs: m(inputs)[0][:, -1])
    assert last.shape == (2, 4)
    with pytest.raises(UsageError, match="forward returned tuple"):
        model_output(lstm, x, forward=lambda m, inputs: m(inputs))


def test_a_pair_of_tuple_inputs_keeps_lists_of_numbers_whole():
    inputs, targets, _ = sample(((np.zeros((3, 2)), [[1, 2], [3, 4], [5, 6]]), np.arange(3)))
    assert inputs[1].shape == (3, 2) and targets.tolist() == [0, 1, 2]

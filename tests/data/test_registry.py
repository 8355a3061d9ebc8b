"""The data-source registry (one table that load_data, the CLI's help and the errors read),
and the loaders' answers to files that are not what they claim: 0-d arrays, a text file
named .npz, protocol-5 CIFAR pickles, a typo label that would size the model's head."""

import pickle
import re

import numpy as np
import pytest
import torch

from babysit.data import datasets, load_data
from babysit.data.datasets import SOURCES, SPECS, DataSource, specs_help
from babysit.errors import DataError

# --- the registry ----------------------------------------------------------------------------


def test_a_source_added_to_the_registry_is_loaded_listed_and_named_in_errors(monkeypatch):
    def tiny(arg):
        n = int(arg)
        return torch.zeros(n, 3), torch.arange(n) % 2, None, None, 2

    source = DataSource("tiny", "tiny:N", "N zero rows", "required", tiny)
    monkeypatch.setitem(SOURCES, "tiny", source)
    splits = load_data("tiny:10", val_fraction=0.2)
    assert (len(splits.train), len(splits.val), splits.classes) == (8, 2, 2)
    assert "tiny:N (N zero rows)" in specs_help()
    with pytest.raises(DataError, match=r"unknown data spec 'mnist'.*tiny:N"):
        load_data("mnist")
    with pytest.raises(DataError, match=r"'tiny' needs its N: write tiny:N"):
        load_data("tiny")


def test_specs_and_help_list_every_registered_source():
    assert tuple(s.usage for s in SOURCES.values()) == SPECS
    assert set(SOURCES) == {"digits", "cifar10", "npz", "synthetic"}
    for usage in SPECS:
        assert usage in specs_help()


def test_cli_data_help_is_the_registry_help(capsys):
    from babysit.cli import main

    assert main(["doctor", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for source in SOURCES.values():
        assert source.usage in text


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("cifar10", "'cifar10' needs its DIR: write cifar10:DIR"),
        ("npz:", "'npz:' needs its FILE: write npz:FILE"),
        ("digits:extra", "'digits:extra' takes no argument: write digits"),
    ],
)
def test_a_spec_missing_or_adding_its_argument_says_how_to_write_it(spec, match):
    with pytest.raises(DataError, match=match):
        load_data(spec)


def test_digits_and_synthetic_keep_their_spellings():
    assert load_data("digits:").classes == 10
    assert load_data("synthetic").input_shape == (64,)


# --- npz files that are not what they claim ------------------------------------------------


def test_npz_with_0d_arrays_is_a_data_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array(1.0), y=np.array(2))
    with pytest.raises(DataError, match=r"single value .*shape \(\).*\(N, \.\.\.\)"):
        load_data(f"npz:{tmp_path / 'd.npz'}")


def test_a_text_file_named_npz_is_not_blamed_on_pickle(tmp_path):
    (tmp_path / "d.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="is not a .npz file") as caught:
        load_data(f"npz:{tmp_path / 'd.npz'}")
    assert "pickle" not in str(caught.value)


def test_a_npy_file_given_as_npz_is_named_for_what_it_is(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"is a \.npy file .*np\.savez"):
        load_data(f"npz:{tmp_path / 'd.npy'}")


def test_an_empty_zip_named_npz_says_what_it_lacks(tmp_path):
    np.savez(tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"must hold arrays 'x' and 'y', found \[\]"):
        load_data(f"npz:{tmp_path / 'd.npz'}")


# --- labels far above the others -----------------------------------------------------------


def _npz_with_label(tmp_path, label):
    g = np.random.default_rng(0)
    y = np.arange(300) % 10
    y[5] = label
    np.savez(tmp_path / "d.npz", x=g.normal(size=(300, 8)).astype(np.float32), y=y)
    return f"npz:{tmp_path / 'd.npz'}"


@pytest.mark.parametrize("label", [999_999, 10**10])
def test_a_typo_label_does_not_size_the_classes(tmp_path, label):
    spec = _npz_with_label(tmp_path, label)
    with pytest.raises(
        DataError, match=rf"1 labels lie far above .*{re.escape(f'{label:g}')}.*0\.\.9"
    ):
        load_data(spec)
    splits = load_data(spec, validate=False, val_fraction=0)  # the checkup's LABELS_INVALID
    assert splits.classes == 10
    assert int(splits.train.tensors[1].max()) == label  # kept as it is, for the finding


def test_a_sparse_but_plausible_label_set_keeps_max_plus_one(tmp_path):
    spec = _npz_with_label(tmp_path, 999)  # below MIN_SUSPECT_CLASSES: a real class id
    assert load_data(spec).classes == 1000


# --- CIFAR-10 pickles of protocol 5 ------------------------------------------------------------


def _cifar_folder(tmp_path, protocol):
    folder = tmp_path / "cifar"
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    for name in (*datasets.CIFAR10_TRAIN_BATCHES, datasets.CIFAR10_TEST_BATCH):
        batch = {b"data": g.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


def test_a_protocol_5_cifar_pickle_loads_like_protocol_2(tmp_path):
    five = load_data(f"cifar10:{_cifar_folder(tmp_path / 'a', 5)}", val_fraction=0)
    two = load_data(f"cifar10:{_cifar_folder(tmp_path / 'b', 2)}", val_fraction=0)
    assert torch.equal(five.train.tensors[0], two.train.tensors[0])
    assert torch.equal(five.test.tensors[1], two.test.tensors[1])
    assert five.train.tensors[0].shape == (20, 3, 32, 32)


def test_a_protocol_5_frombuffer_with_object_dtype_is_refused(tmp_path):
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # NumPy < 2
        from numpy.core.numeric import _frombuffer

    class ObjectArray:
        def __reduce__(self):
            return _frombuffer, (b"\0" * 8, np.dtype(object), (1,), "C")

    folder = _cifar_folder(tmp_path, 5)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": ObjectArray()}, protocol=5))
    with pytest.raises(DataError, match="data_batch_2 is not a CIFAR-10 batch.*dtype object"):
        load_data(f"cifar10:{folder}")

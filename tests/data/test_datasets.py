"""load_data specs, validation and splits, against independent references (scikit-learn's
digits, CIFAR-10 batches written here in the real format, NumPy)."""

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from babysit.data import Splits, as_tensors, load_data
from babysit.errors import DataError, UsageError

# --- digits --------------------------------------------------------------------------------


def test_digits_is_the_default_with_raw_pixels_and_a_fifth_for_val():
    splits = load_data()
    train, val = splits
    assert isinstance(splits, Splits) and splits.name == "digits"
    assert (len(train), len(val)) == (1438, 359)  # round(1797 * 0.2) = 359
    assert splits.test is None and splits.classes == 10 and splits.input_shape == (1, 8, 8)
    x, y = train.tensors
    assert x.shape == (1438, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 16  # raw, not normalised


def test_digits_splits_hold_every_example_once_with_its_label():
    digits = load_digits()
    train, val = load_data("digits")
    x = torch.cat([train.tensors[0], val.tensors[0]]).reshape(-1, 64).numpy()
    y = torch.cat([train.tensors[1], val.tensors[1]]).numpy()
    ours = sorted(zip(map(bytes, x.astype(np.uint8)), y, strict=True))
    reference = sorted(zip(map(bytes, digits.data.astype(np.uint8)), digits.target, strict=True))
    assert ours == reference


def test_split_is_reproducible_and_depends_on_the_seed():
    a = load_data("digits", seed=1).val.tensors[1]
    b = load_data("digits", seed=1).val.tensors[1]
    c = load_data("digits", seed=2).val.tensors[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_val_fraction_zero_gives_no_val_split():
    train, val = load_data("digits", val_fraction=0)
    assert val is None and len(train) == 1797


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.2", True])
def test_val_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(UsageError, match=r"val_fraction must be a number in \[0, 1\)"):
        load_data("digits", val_fraction=fraction)


def test_unknown_spec_lists_the_valid_ones():
    with pytest.raises(DataError, match="unknown data spec 'mnist'.*digits, cifar10:DIR, npz"):
        load_data("mnist")


# --- CIFAR-10 -------------------------------------------------------------------------------


def _image(index):
    """A CIFAR row (3072 bytes: R plane, G plane, B plane) that encodes its own index."""
    return ((index * 7 + np.arange(3072)) % 256).astype(np.uint8)


def _write_batch(path, indices):
    batch = {
        b"batch_label": b"fake",
        b"data": np.stack([_image(i) for i in indices]),
        b"labels": [i % 10 for i in indices],
        b"filenames": [f"{i}.png".encode() for i in indices],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def _fake_cifar(folder, per_batch=4, test=3):
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        _write_batch(folder / f"data_batch_{b + 1}", range(b * per_batch, (b + 1) * per_batch))
    _write_batch(folder / "test_batch", range(100, 100 + test))
    return folder


def _check_images(dataset):
    x, y = dataset.tensors
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    seen = []
    for image, label in zip(x, y, strict=True):
        index = int(image[0, 0, 0]) * 183 % 256  # 183 = 7^-1 mod 256
        c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
        expected = (index * 7 + c * 1024 + h * 32 + w) % 256
        np.testing.assert_array_equal(image.numpy(), expected)
        assert label == index % 10
        seen.append(index)
    return sorted(seen)


def test_cifar10_reads_real_format_batches_channel_planes_and_labels(tmp_path):
    folder = _fake_cifar(tmp_path / "cifar")
    splits = load_data(f"cifar10:{folder}", val_fraction=0.25)
    train, val = splits
    assert (len(train), len(val), len(splits.test)) == (15, 5, 3)
    assert splits.classes == 10 and splits.input_shape == (3, 32, 32)
    assert sorted(_check_images(train) + _check_images(val)) == list(range(20))
    assert _check_images(splits.test) == [100, 101, 102]
    assert train.tensors[0].max() <= 255 and train.tensors[0].max() > 1  # raw 0..255


def test_cifar10_finds_the_extracted_subfolder(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    assert len(load_data(f"cifar10:{tmp_path}", val_fraction=0).train) == 20


def test_cifar10_missing_batch_names_it(tmp_path):
    folder = _fake_cifar(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="lacks data_batch_4"):
        load_data(f"cifar10:{folder}")


def test_cifar10_missing_directory_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        load_data(f"cifar10:{tmp_path / 'nowhere'}")


class _RunsExec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(("payload", "name"), [(_RunsExec, "exec"), (_RunsShell, "system")])
def test_cifar10_pickle_that_runs_code_is_refused_and_the_code_never_runs(tmp_path, payload, name):
    folder = _fake_cifar(tmp_path / "cifar")
    marker = tmp_path / "marker"
    batch = {b"data": np.stack([_image(0)] * 4), b"labels": [0] * 4, b"x": payload(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=f"data_batch_3 is not a CIFAR-10 batch.*{name}"):
        load_data(f"cifar10:{folder}")
    assert not marker.exists()
    pickle.loads((folder / "data_batch_3").read_bytes())  # control: a plain unpickler runs it
    assert marker.exists()


def test_cifar10_pickle_codecs_is_limited_to_latin1(tmp_path):
    import codecs

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("text", "rot13")

    folder = _fake_cifar(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Rot13()}, protocol=2))
    with pytest.raises(DataError, match="rot13"):
        load_data(f"cifar10:{folder}")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a pickle at all", "cannot read CIFAR-10 batch"),
        (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}), r"\(n, 3072\)"),
        (pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR-10 batch"),
    ],
)
def test_cifar10_unreadable_or_malformed_batch_is_a_data_error(tmp_path, content, match):
    folder = _fake_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_data(f"cifar10:{folder}")


# --- npz ------------------------------------------------------------------------------------


def test_npz_round_trip_with_classes_from_the_largest_label(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2, 3)).astype(np.float64)
    y = np.arange(50) % 4
    x_test, y_test = rng.normal(size=(7, 2, 3)), np.full(7, 5.0)  # integral floats: 6 classes
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    splits = load_data(f"npz:{tmp_path / 'd.npz'}", val_fraction=0.2)
    assert splits.classes == 6 and splits.input_shape == (2, 3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 7)
    xs = torch.cat([splits.train.tensors[0], splits.val.tensors[0]])
    assert xs.dtype == torch.float32 and splits.test.tensors[1].dtype == torch.int64
    np.testing.assert_allclose(np.sort(xs.numpy().ravel()), np.sort(x.ravel()), rtol=1e-6)


def test_npz_without_x_and_y_lists_the_keys_found(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((3, 2)), targets=np.zeros(3))
    with pytest.raises(
        DataError, match=r"must hold arrays 'x' and 'y', found \['inputs', 'targets'\]"
    ):
        load_data(f"npz:{tmp_path / 'd.npz'}")


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3))
    with pytest.raises(DataError, match="plain numeric arrays"):
        load_data(f"npz:{tmp_path / 'd.npz'}")


def test_npz_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="missing.npz' does not exist"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")


def _npz(tmp_path, x, y):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    return f"npz:{path}"


def test_nan_inputs_name_the_count_and_first_example(tmp_path):
    x = np.ones((20, 4))
    x[7, 1] = np.nan
    x[12, :2] = np.inf
    with pytest.raises(
        DataError, match=r"3 NaN/inf input values in 2 examples \(first at example 7\)"
    ):
        load_data(_npz(tmp_path, x, np.zeros(20)))


def test_validate_false_lets_nan_and_fractional_labels_through_unchanged(tmp_path):
    x = np.ones((20, 4))
    x[7, 1] = np.nan
    y = np.arange(20) / 2  # 0, 0.5, 1, ...
    splits = load_data(_npz(tmp_path, x, y), val_fraction=0, validate=False)
    xs, ys = splits.train.tensors
    order = torch.argsort(ys)
    assert torch.isnan(xs[order][7, 1]) and int(torch.isnan(xs).sum()) == 1
    assert ys.dtype == torch.float64 and torch.equal(ys[order], torch.from_numpy(y))


def test_fractional_labels_are_refused_when_validating(tmp_path):
    y = np.zeros(10)
    y[3] = 1.5
    with pytest.raises(DataError, match=r"1 labels are not integers \(first at example 3: 1.5\)"):
        load_data(_npz(tmp_path, np.ones((10, 2)), y))


def test_negative_labels_are_outside_the_class_range(tmp_path):
    y = np.arange(10)
    y[4] = -1
    with pytest.raises(DataError, match=r"1 labels outside \[0, 10\) \(first at example 4: -1"):
        load_data(_npz(tmp_path, np.ones((10, 2)), y))
    assert load_data(_npz(tmp_path, np.ones((10, 2)), y), validate=False).classes == 10


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.ones((10, 2)), np.zeros(9), r"one label per example, shape \(10,\)"),
        (np.ones((0, 2)), np.zeros(0), "N >= 1 examples"),
        (np.ones(10), np.zeros(10), r"shaped \(N, ...\)"),
        (np.ones((10, 2)), np.zeros((10, 3)), r"labels of shape \(10, 3\)"),
    ],
)
def test_structural_problems_raise_even_without_validation(tmp_path, x, y, match, validate):
    with pytest.raises(DataError, match=match):
        load_data(_npz(tmp_path, x, y), validate=validate)


def test_a_split_left_empty_is_refused(tmp_path):
    with pytest.raises(DataError, match="leaves an empty split"):
        load_data(_npz(tmp_path, np.ones((2, 2)), np.zeros(2)), val_fraction=0.2)


# --- synthetic -----------------------------------------------------------------------------


def test_synthetic_parses_size_shape_and_classes_and_is_seeded():
    splits = load_data("synthetic:n=300,shape=3x4x5,classes=3,seed=4", val_fraction=0.1)
    x, y = splits.train.tensors
    assert x.shape == (270, 3, 4, 5) and splits.classes == 3 and set(y.tolist()) == {0, 1, 2}
    again = load_data("synthetic:n=300,shape=3x4x5,classes=3,seed=4", val_fraction=0.1)
    other = load_data("synthetic:n=300,shape=3x4x5,classes=3,seed=5", val_fraction=0.1)
    assert torch.equal(x, again.train.tensors[0]) and not torch.equal(x, other.train.tensors[0])


def test_synthetic_defaults_are_learnable_at_unit_scale():
    train, val = load_data("synthetic")
    x, y = train.tensors
    assert x.shape == (800, 64) and 0.9 < float(x.std()) < 1.3
    # nearest class mean, fitted on train: ~99% by SYNTHETIC_MEAN_DISTANCE's arithmetic
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    predicted = torch.cdist(val.tensors[0], means).argmin(1)
    assert (predicted == val.tensors[1]).float().mean() > 0.95


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:size=10", "unknown synthetic key 'size': use n, shape, classes, seed"),
        ("synthetic:n=ten", "n='ten' is not an integer"),
        ("synthetic:shape=3xa", "shape='3xa' is not a shape"),
        ("synthetic:n=0", "n=0 must be >= 1"),
    ],
)
def test_synthetic_bad_keys_and_values_say_what_to_write(spec, match):
    with pytest.raises(DataError, match=match):
        load_data(spec)


# --- Splits and as_tensors -----------------------------------------------------------------


def test_splits_survive_pickling_with_their_attributes():
    splits = load_data("synthetic:n=50", val_fraction=0.2)
    restored = pickle.loads(pickle.dumps(splits))
    assert restored.classes == 10 and restored.input_shape == (64,) and restored.name == splits.name
    assert torch.equal(restored.val.tensors[0], splits.val.tensors[0])


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


class _Pairs(Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full((2, 2), float(i)), i


def test_as_tensors_reads_datasets_pairs_and_arrays():
    x, y = torch.randn(5, 3), torch.arange(5)
    for data in (
        TensorDataset(x, y),
        (x, y),
        [x.numpy(), y.numpy()],
        [(a, b) for a, b in zip(x, y, strict=True)],
    ):
        xs, ys = as_tensors(data)
        assert torch.equal(xs, x) and torch.equal(ys, y)
    xs, ys = as_tensors(_Pairs())
    assert (
        xs.shape == (5, 2, 2)
        and torch.equal(xs[:, 0, 0], torch.arange(5.0))
        and ys.tolist() == [0, 1, 2, 3, 4]
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("digits", "cannot read examples from a str"),
        ({"x": 1}, "cannot read examples from a dict"),
        ((torch.zeros(3, 2), torch.zeros(4)), r"one label per example"),
        (TensorDataset(torch.zeros(3, 2)), "holds 1 tensor"),
        (_Stream(), "_Stream has no length"),
        ([(torch.zeros(2), 0), (torch.zeros(2),)], "at index 1"),
        ([torch.zeros(3), torch.zeros(3), torch.zeros(3)], "must be \\(x, y\\) pairs"),
    ],
)
def test_as_tensors_refuses_what_it_cannot_read(data, match):
    with pytest.raises(UsageError, match=match):
        as_tensors(data)


# --- token ids and per-position labels (issue 12) -------------------------------------------


def test_npz_token_ids_stay_integer_and_pixels_become_float(tmp_path):
    ids = np.arange(60, dtype=np.int32).reshape(20, 3) % 7
    splits = load_data(_npz(tmp_path, ids, np.arange(20) % 2), val_fraction=0)
    assert splits.train.tensors[0].dtype == torch.int64
    expected = torch.as_tensor(ids).long().sort(0).values  # rows shuffled by the split
    assert torch.equal(splits.train.tensors[0].sort(0).values, expected)
    pixels = np.full((20, 3), 255, dtype=np.uint8)
    x = load_data(_npz(tmp_path, pixels, np.arange(20) % 2), val_fraction=0).train.tensors[0]
    assert x.dtype == torch.float32 and float(x.max()) == 255.0


def test_npz_per_position_labels_for_tokens_and_segmentation(tmp_path):
    ids = np.arange(40).reshape(10, 4) % 9
    splits = load_data(_npz(tmp_path, ids, (ids + 1) % 9), val_fraction=0)
    assert splits.train.tensors[1].shape == (10, 4) and splits.classes == 9
    images, masks = np.zeros((6, 3, 5, 5), np.float32), np.ones((6, 5, 5), np.int64)
    assert load_data(_npz(tmp_path, images, masks), val_fraction=0).classes == 2


def test_per_position_padding_is_allowed_and_a_bad_position_is_named(tmp_path):
    ids = np.arange(40).reshape(10, 4) % 9
    labels = (ids + 1) % 9
    labels[:, -1] = -100  # torch's ignore_index: padding
    assert load_data(_npz(tmp_path, ids, labels), val_fraction=0).classes == 9
    labels[3, 1] = -2
    with pytest.raises(DataError, match=r"1 labels outside \[0, 9\) \(first at example 3: -2"):
        load_data(_npz(tmp_path, ids, labels))

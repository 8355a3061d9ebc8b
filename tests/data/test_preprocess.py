"""Preprocessing transforms against independent references: scikit-learn's PCA and
StandardScaler, NumPy's mean and covariance, and the in-memory fit for the streaming one."""

import io

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from babysit.data import (
    PCA,
    MeanImage,
    NotFittedError,
    PerChannelMean,
    Standardize,
    Whiten,
    load_data,
)
from babysit.errors import UsageError


def _correlated(n, d, seed, offset=50.0):
    """Correlated features with a common offset, smallest covariance eigenvalue ~1."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 3 * np.eye(d)
    return rng.normal(size=(n, d)) @ mixing + offset + rng.normal(size=d)


@pytest.fixture
def train():
    return _correlated(600, 12, seed=0)


@pytest.fixture
def val():
    return _correlated(200, 12, seed=1) * 1.5 - 3


def _align_signs(ours, theirs):
    """Flip each of our components (rows) to the sign of the reference's."""
    return np.sign(np.sum(ours * theirs, axis=1, keepdims=True))


def _loader(x, batch_size=64):
    x = torch.as_tensor(x)
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=batch_size)


TRANSFORMS = [
    MeanImage,
    Standardize,
    lambda: PCA(5),
    lambda: PCA(5, whiten=True),
    lambda: Whiten(kind="zca"),
    lambda: Whiten(kind="pca"),
]


# --- PCA and whitening against scikit-learn ------------------------------------------------


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_sklearn_up_to_the_sign_of_each_component(train, val, whiten):
    ours = PCA(n_components=5, whiten=whiten).fit(train)
    ref = SklearnPCA(n_components=5, whiten=whiten, svd_solver="full").fit(train)
    signs = _align_signs(ours.components_.numpy(), ref.components_)
    np.testing.assert_allclose(ours.components_.numpy() * signs, ref.components_, atol=1e-10)
    np.testing.assert_allclose(
        ours.explained_variance_.numpy(), ref.explained_variance_, rtol=1e-10
    )
    np.testing.assert_allclose(
        ours.explained_variance_ratio_.numpy(), ref.explained_variance_ratio_, rtol=1e-10
    )
    for x in (train, val):
        np.testing.assert_allclose(ours.transform(x) * signs.T, ref.transform(x), atol=1e-9)


def test_pca_variance_fraction_keeps_as_many_components_as_sklearn(train):
    for fraction in (0.5, 0.9, 0.99):
        ref = SklearnPCA(n_components=fraction, svd_solver="full").fit(train)
        assert PCA(fraction).fit(train).n_components_ == ref.n_components_


def test_pca_whitening_of_images_returns_n_by_k_and_matches_sklearn():
    train, _ = load_data("digits")
    x = train.tensors[0].double()
    ours = PCA(20, whiten=True).fit(x)
    z = ours.transform(x)
    assert z.shape == (len(x), 20) and z.dtype == torch.float64
    ref = SklearnPCA(20, whiten=True, svd_solver="full").fit(x.reshape(len(x), -1).numpy())
    signs = _align_signs(ours.components_.numpy(), ref.components_)
    np.testing.assert_allclose(z.numpy() * signs.T, ref.transform(x.reshape(len(x), -1)), atol=1e-8)


def test_whiten_pca_without_eps_is_sklearns_whitened_pca(train, val):
    ours = Whiten(kind="pca", eps=0).fit(train)
    ref = SklearnPCA(whiten=True, svd_solver="full").fit(train)
    signs = _align_signs(ours.components_.numpy(), ref.components_)
    np.testing.assert_allclose(ours.transform(val) * signs.T, ref.transform(val), atol=1e-9)


def test_whiten_pca_divides_each_component_by_sqrt_variance_plus_eps(train):
    eps = 5.0
    ours = Whiten(kind="pca", eps=eps).fit(train)
    ref = SklearnPCA(svd_solver="full").fit(train)
    signs = _align_signs(ours.components_.numpy(), ref.components_)
    expected = ref.transform(train) / np.sqrt(ref.explained_variance_ + eps)
    np.testing.assert_allclose(ours.transform(train) * signs.T, expected, atol=1e-9)


def test_zca_whitened_train_has_identity_covariance_and_a_symmetric_matrix(train):
    zca = Whiten(kind="zca").fit(train)
    z = zca.transform(train)
    assert z.shape == train.shape
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(12), atol=1e-4)  # eps = 1e-5
    matrix = zca.whitening_matrix_.numpy()
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    # ZCA is the symmetric inverse square root of the covariance: W C W = I
    exact = Whiten(kind="zca", eps=0).fit(train).whitening_matrix_.numpy()
    np.testing.assert_allclose(exact @ np.cov(train, rowvar=False) @ exact, np.eye(12), atol=1e-9)


def test_zca_keeps_image_shape_and_pca_whitening_flattens():
    x = torch.randn(300, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert Whiten(kind="zca").fit_transform(x).shape == (300, 2, 3, 3)
    assert Whiten(kind="pca").fit_transform(x).shape == (300, 18)


# --- means and standardisation against NumPy and scikit-learn -------------------------------


def test_mean_image_subtracts_the_per_pixel_mean():
    x = torch.randn(50, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 10 + 7
    transform = MeanImage().fit(x)
    np.testing.assert_allclose(transform.mean_.numpy(), x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(transform.transform(x), x - x.mean(0), atol=1e-5)


def test_per_channel_mean_subtracts_one_mean_per_channel_at_any_size():
    x = torch.randn(40, 3, 5, 5, generator=torch.Generator().manual_seed(0)) + torch.tensor(
        [100.0, -20.0, 3.0]
    ).reshape(3, 1, 1)
    transform = PerChannelMean().fit(x)
    expected = x.double().mean(dim=(0, 2, 3))
    np.testing.assert_allclose(transform.mean_.numpy(), expected.numpy(), rtol=1e-12)
    bigger = torch.ones(2, 3, 8, 8)
    np.testing.assert_allclose(
        transform.transform(bigger)[:, :, 0, 0], 1 - expected.expand(2, 3), rtol=1e-5
    )


def test_standardize_matches_sklearn_standard_scaler_with_a_constant_feature(train, val):
    train = train.copy()
    train[:, 3] = 42.0
    ours = Standardize().fit(train)
    ref = StandardScaler().fit(train)
    np.testing.assert_allclose(ours.mean_.numpy(), ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.std_.numpy(), ref.scale_, rtol=1e-10)
    assert ours.std_[3] == 1.0
    np.testing.assert_allclose(ours.transform(val), ref.transform(val), rtol=1e-9, atol=1e-12)


def test_standardize_keeps_a_pixel_constant_in_train_finite_on_val():
    # With seed 0 one digits pixel is 0 throughout train but not in val: a tiny std floor
    # would multiply it by 1/floor.
    train, val = load_data("digits", seed=0)
    ours = Standardize().fit(train.tensors[0])
    ref = StandardScaler().fit(train.tensors[0].reshape(len(train), -1).numpy())
    z = ours.transform(val.tensors[0])
    np.testing.assert_allclose(
        z.reshape(len(val), -1).numpy(),
        ref.transform(val.tensors[0].reshape(len(val), -1)),
        atol=1e-5,
    )
    assert z.abs().max() < 100


# --- streaming fit -------------------------------------------------------------------------


@pytest.mark.parametrize("make", TRANSFORMS)
def test_streaming_fit_over_a_dataloader_equals_the_in_memory_fit(make):
    data = _correlated(2500, 12, seed=2)  # several flushes of the buffered X^T X products
    in_memory = make().fit(data)
    streamed = make().fit(_loader(data, batch_size=37))
    for name, value in in_memory.state_dict()["state"].items():
        np.testing.assert_allclose(
            streamed.state_dict()["state"][name].numpy(), value.numpy(), rtol=1e-10, atol=1e-10
        )


def test_streaming_accepts_bare_tensor_batches():
    x = torch.randn(100, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    streamed = Standardize().fit(torch.split(x, 30))
    np.testing.assert_allclose(streamed.std_.numpy(), x.std(0, correction=0).numpy(), rtol=1e-12)


def test_float32_streaming_covariance_is_close_to_the_float64_reference():
    # Pixel-like float32 data, mean ~120 and std ~5: float32 batch products, float64 sums.
    # Without the shift, float32 products would lose 2 log10(120 / 5) ~ 3 of their 7 digits.
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(48, 48)) / np.sqrt(48)
    x = (rng.normal(size=(3000, 48)) @ mixing * 5 + 120).astype(np.float32)
    fitted = Whiten(kind="pca").fit(_loader(x, batch_size=500))
    components = fitted.components_.numpy()
    covariance = components.T @ np.diag(fitted.explained_variance_.numpy()) @ components
    reference = np.cov(x.astype(np.float64), rowvar=False)
    assert np.abs(covariance - reference).max() < 1e-5 * np.abs(reference).max()
    np.testing.assert_allclose(fitted.mean_.numpy(), x.astype(np.float64).mean(0), rtol=1e-9)


def test_covariance_over_several_column_blocks_and_buffers_matches_numpy():
    # 600 features: the upper triangle of X^T X comes in 3 column blocks, and 2500 rows in
    # batches of 300 fill the product buffer several times.
    x = _correlated(2500, 600, seed=3)
    fitted = Whiten(kind="pca", eps=0).fit(_loader(x, batch_size=300))
    components = fitted.components_.numpy()
    covariance = components.T @ np.diag(fitted.explained_variance_.numpy()) @ components
    np.testing.assert_allclose(covariance, np.cov(x, rowvar=False), atol=1e-8)


def test_shifted_accumulation_keeps_the_variance_of_data_far_from_zero():
    # mean 1e8, std 1: E[x^2] - E[x]^2 in float64 would lose every digit of the variance.
    x = np.random.default_rng(0).normal(size=(2000, 3)) + 1e8
    fitted = Standardize().fit(_loader(x, batch_size=128))
    np.testing.assert_allclose(fitted.std_.numpy(), x.std(0), rtol=1e-6)


# --- fit on train, apply to val -------------------------------------------------------------


@pytest.mark.parametrize("make", TRANSFORMS)
def test_transform_fitted_on_train_does_not_refit_on_val(train, val, make):
    transform = make().fit(train)
    before = {k: v.clone() for k, v in transform.state_dict()["state"].items()}
    z_val = transform.transform(val)
    for name, value in transform.state_dict()["state"].items():
        assert torch.equal(value, before[name])
    refitted = make().fit_transform(val)
    assert not np.allclose(z_val, refitted)


def test_mean_image_applied_to_val_subtracts_the_train_mean(train, val):
    z = MeanImage().fit(train).transform(val)
    np.testing.assert_allclose(z, val - train.mean(0), atol=1e-10)
    assert np.abs(z.mean(0)).min() > 1  # val keeps its own offset from train's mean


# --- inverse, state_dict, types ------------------------------------------------------------


@pytest.mark.parametrize("make", [*TRANSFORMS, lambda: PCA(), lambda: PCA(whiten=True)])
def test_inverse_transform_round_trips(train, val, make):
    transform = make().fit(train)
    back = transform.inverse_transform(transform.transform(val))
    if isinstance(transform, PCA) and transform.n_components_ < 12:
        ref = SklearnPCA(5, whiten=transform.whiten, svd_solver="full").fit(train)
        expected = ref.inverse_transform(ref.transform(val))  # the projection on 5 components
    else:
        expected = val
    np.testing.assert_allclose(back, expected, atol=1e-8)


def test_image_inverse_transforms_return_the_image_shape():
    x = torch.randn(100, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for transform in (PCA(), Whiten(kind="pca"), Whiten(kind="zca"), PerChannelMean()):
        back = transform.fit(x).inverse_transform(transform.transform(x))
        assert back.shape == x.shape
        torch.testing.assert_close(back, x)


@pytest.mark.parametrize(
    "make",
    [
        MeanImage,
        PerChannelMean,
        Standardize,
        lambda: PCA(3, whiten=True),
        lambda: Whiten(kind="pca", eps=0.5),
    ],
)
def test_state_dict_round_trips_through_torch_save_into_a_fresh_object(make):
    x = torch.randn(80, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fitted = make().fit(x)
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    restored = type(fitted)().load_state_dict(torch.load(buffer, weights_only=True))
    assert repr(restored) == repr(fitted)
    torch.testing.assert_close(restored.transform(x), fitted.transform(x), rtol=0, atol=0)


def test_repr_and_state_dict_config_are_the_constructor_arguments():
    assert repr(PCA(3, whiten=True)) == "PCA(n_components=3, whiten=True)"
    assert repr(Whiten(kind="pca", eps=0.5)) == "Whiten(kind='pca', eps=0.5)"
    assert repr(Standardize()) == "Standardize()"
    x = torch.randn(20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert Whiten(eps=0.25).fit(x).state_dict()["config"] == {"kind": "zca", "eps": 0.25}


def test_load_state_dict_of_another_transform_is_refused(train):
    with pytest.raises(UsageError, match="got the state of 'MeanImage'"):
        Standardize().load_state_dict(MeanImage().fit(train).state_dict())


def test_outputs_keep_the_input_type_and_floating_dtype():
    x = np.random.default_rng(0).normal(size=(50, 4))
    for data in (x.astype(np.float32), x, torch.tensor(x, dtype=torch.float32)):
        out = Whiten().fit(data).transform(data)
        assert type(out) is type(data) and out.dtype == data.dtype
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 3, 4, 4), dtype=np.uint8)
    out = PerChannelMean().fit(pixels).transform(pixels)
    assert out.dtype == np.float32 and out.min() < 0


# --- boundary errors -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [*TRANSFORMS, PerChannelMean])
def test_transform_before_fit_says_call_fit_first(make):
    with pytest.raises(NotFittedError, match=r"is not fitted.*call fit\(train\) first"):
        make().transform(np.zeros((3, 4, 2, 2)))


@pytest.mark.parametrize("make", TRANSFORMS)
def test_wrong_feature_count_names_expected_and_given(train, make):
    transform = make().fit(train)
    with pytest.raises(UsageError, match=r"fitted on examples of shape \(12,\).*got shape \(10,\)"):
        transform.transform(train[:, :10])


def test_per_channel_mean_needs_channels(train):
    with pytest.raises(UsageError, match=r"PerChannelMean needs inputs shaped \(N, C, ...\)"):
        PerChannelMean().fit(train)
    fitted = PerChannelMean().fit(np.zeros((4, 3, 2, 2)))
    with pytest.raises(UsageError, match=r"\(3 features\), got shape \(2, 2, 2\) \(2 features\)"):
        fitted.transform(np.zeros((4, 2, 2, 2)))


@pytest.mark.parametrize("n_components", [0, -1, 1.0, 1.5, True, "all"])
def test_pca_n_components_out_of_range_is_refused(n_components):
    with pytest.raises(UsageError, match="n_components must be"):
        PCA(n_components)


def test_pca_more_components_than_data_allows_is_refused(train):
    with pytest.raises(UsageError, match="n_components=13 is more than .*=12"):
        PCA(13).fit(train)
    with pytest.raises(UsageError, match="n_components=5 is more than .*=4"):
        PCA(5).fit(train[:4])


@pytest.mark.parametrize("make", [*TRANSFORMS, PerChannelMean])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_fit_on_nan_or_inf_is_refused(train, make, value):
    bad = train.copy().reshape(600, 3, 4)
    bad[5, 2, 1] = value
    with pytest.raises(UsageError, match="NaN or inf"):
        make().fit(bad)


def test_fit_on_too_little_or_one_dimensional_data_is_refused(train):
    with pytest.raises(UsageError, match=r"got shape \(600,\)"):
        MeanImage().fit(train[:, 0])
    with pytest.raises(UsageError, match="at least 2 examples, got 1"):
        Whiten().fit(train[:1])


@pytest.mark.parametrize(("kind", "eps"), [("svd", 1e-5), ("zca", -1.0), ("zca", "small")])
def test_whiten_bad_kind_or_eps_is_refused(kind, eps):
    with pytest.raises(UsageError, match="Whiten"):
        Whiten(kind=kind, eps=eps)

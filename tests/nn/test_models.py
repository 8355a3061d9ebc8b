import pytest
import torch
from torch import nn

from babysit.nn import Maxout, cnn, mlp


def test_mlp_layout_and_shapes():
    model = mlp((1, 8, 8), [100, 50], 10, activation="tanh")
    assert [type(m) for m in model] == [
        nn.Flatten,
        nn.Linear,
        nn.Tanh,
        nn.Linear,
        nn.Tanh,
        nn.Linear,
    ]
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_batch_norm_sits_between_linear_and_activation():
    model = mlp(64, [32], 10, batch_norm=True, dropout=0.5)
    names = list(dict(model.named_children()))
    assert names == ["flatten", "fc1", "bn1", "relu1", "dropout1", "logits"]
    assert model.fc1.bias is None  # BatchNorm's shift makes it redundant


def test_batch_norm_uses_running_averages_in_eval_mode():
    torch.manual_seed(0)
    model = mlp(4, [8], 2, batch_norm=True)
    x = torch.randn(256, 4) * 3 + 2
    model.train()
    for _ in range(200):
        model(x)  # running statistics converge to the batch's
    model.eval()
    single = model(x[:1])
    batch = model(x)[:1]
    torch.testing.assert_close(single, batch)  # eval: no dependence on the rest of the batch
    pre = model.fc1(x)
    torch.testing.assert_close(model.bn1.running_mean, pre.mean(0), rtol=1e-3, atol=1e-3)


def test_lecture_ten_layer_tanh_net_with_small_init():
    torch.manual_seed(0)
    model = mlp(500, [500] * 10, 10, activation="tanh", init="small")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 11
    assert all(abs(m.weight.std().item() - 0.01) < 0.0005 for m in linears)


def test_maxout_builder_widens_the_layer_k_times():
    plain = mlp(20, [30], 5, activation="relu")
    maxout = mlp(20, [30], 5, activation="maxout", activation_kwargs={"k": 3})
    assert maxout.fc1.out_features == 90 and isinstance(maxout.maxout1, Maxout)
    n_plain = sum(p.numel() for p in plain.fc1.parameters())
    n_maxout = sum(p.numel() for p in maxout.fc1.parameters())
    assert n_maxout == 3 * n_plain
    assert maxout(torch.randn(2, 20)).shape == (2, 5)


def test_prelu_per_channel():
    model = cnn(3, 16, [8, 4], 10, activation="prelu", activation_kwargs={"per_channel": True})
    assert model.prelu1.weight.shape == (8,) and model.prelu2.weight.shape == (4,)


@pytest.mark.parametrize("size", [8, 32, (12, 9)])
def test_cnn_pools_while_it_can_and_ends_in_logits(size):
    model = cnn(3, size, [4, 8, 8], 7, batch_norm=True)
    h, w = (size, size) if isinstance(size, int) else size
    assert model(torch.randn(2, 3, h, w)).shape == (2, 7)


def test_builders_validate_their_arguments():
    with pytest.raises(ValueError, match="positive integers"):
        mlp(64, [0], 10)
    with pytest.raises(ValueError, match="dropout"):
        mlp(64, [10], 10, dropout=1.0)
    with pytest.raises(ValueError, match="odd"):
        cnn(1, 8, [4], 10, kernel_size=2)
    with pytest.raises(ValueError, match="unknown activation"):
        mlp(64, [10], 10, activation="swish2")


# --- from_spec passes the class count under the keyword the factory takes (issue 12) --------


def _factory_file(tmp_path, source):
    path = tmp_path / "factories.py"
    path.write_text(source)
    return path


FACTORIES = """
import torch.nn as nn

def by_classes(input_shape, classes):
    return nn.Linear(input_shape[0], classes)

def by_num_classes(num_classes=1000, dropout=0.1):
    return nn.Linear(4, num_classes)

def by_vocab(vocab_size, width=8):
    return nn.Embedding(vocab_size, width)

def by_out_features(out_features):
    return nn.Linear(4, out_features)

def torchvision_style(*, weights=None, progress=True, **kwargs):
    return nn.Linear(4, kwargs.get("num_classes", 1000))

def image_net(in_channels, n_classes):
    return nn.Conv2d(in_channels, n_classes, 1)

def positional(shape, k):
    return nn.Linear(shape[0], k)

def needs_more(num_classes, depth):
    return nn.Linear(4, num_classes)
"""


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("by_classes", lambda m: m.out_features == 7),
        ("by_num_classes", lambda m: m.out_features == 7),
        ("by_vocab", lambda m: m.num_embeddings == 7),
        ("by_out_features", lambda m: m.out_features == 7),
        ("torchvision_style", lambda m: m.out_features == 7),
        ("image_net", lambda m: m.in_channels == 3 and m.out_channels == 7),
        ("positional", lambda m: m.in_features == 3 and m.out_features == 7),
    ],
)
def test_from_spec_passes_classes_under_the_keyword_the_factory_takes(tmp_path, name, check):
    from babysit.nn import from_spec

    path = _factory_file(tmp_path, FACTORIES)
    assert check(from_spec(f"{path}:{name}", (3, 8, 8), 7))


def test_from_spec_names_a_parameter_it_cannot_give(tmp_path):
    from babysit.errors import UsageError
    from babysit.nn import from_spec

    path = _factory_file(tmp_path, FACTORIES)
    with pytest.raises(UsageError, match="needs depth, which babysit cannot give"):
        from_spec(f"{path}:needs_more", (4,), 7)

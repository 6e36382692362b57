"""Backbones: torchvision ResNets with the CIFAR stem, the ntk parameterization of the MLP
and CNN, the linear projector, and the errors for bad backbone configs."""

import math

import pytest
import torch
import torchvision
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F

from conftest import options
from sslkit.errors import ConfigError
from sslkit.methods import Backbone, check_part
from sslkit.models import CNN, MLP, linear_projector, resnet
from sslkit.models.layers import NTKConv2d, NTKLinear
from sslkit.train import train

ARCHS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "wide_resnet50_2": 2048}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def torchvision_features(arch: str, cifar_stem: bool) -> nn.Module:
    """torchvision's own model with the classifier dropped and, for the CIFAR stem, the
    first convolution replaced by a 3×3 stride-1 one and the max-pool removed."""
    net = torchvision.models.get_model(arch, weights=None)
    net.fc = nn.Identity()
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    return net


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cifar_stem", [True, False])
def test_resnet_matches_torchvision(arch, cifar_stem):
    ours = resnet((3, 32, 32), arch, cifar_stem=cifar_stem)
    reference = torchvision_features(arch, cifar_stem)
    assert n_params(ours) == n_params(reference)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    assert ours.out_dim == ARCHS[arch]


def test_width_multiplier_gives_torchvision_wide_resnet():
    """resnet50 with bottleneck width 2·64 is torchvision's wide_resnet50_2, whose own
    width doubles again with k = 2 (torchvision's width_per_group = 256)."""
    assert n_params(resnet((3, 32, 32), "resnet50", width_multiplier=2)) == n_params(
        torchvision_features("wide_resnet50_2", True))
    wider = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], width_per_group=256)
    wider.fc, wider.conv1, wider.maxpool = nn.Identity(), nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    ours = resnet((3, 32, 32), "wide_resnet50_2", width_multiplier=2)
    assert n_params(ours) == n_params(wider) and ours.out_dim == 2048


@pytest.mark.parametrize(("arch", "k", "expected"), [("resnet18", 2, "BasicBlock has a fixed width"),
                                                      ("resnet50", 0, "use an integer >= 1")])
def test_width_multiplier_errors(arch, k, expected):
    with pytest.raises(ConfigError, match=f"backbone.width_multiplier={k} .*{expected}"):
        resnet((3, 32, 32), arch, width_multiplier=k)


def test_resnet_stems_and_output():
    x = torch.randn(2, 3, 32, 32)
    cifar = resnet((3, 32, 32), "resnet18", cifar_stem=True)
    imagenet = resnet((3, 32, 32), "resnet18", cifar_stem=False)
    assert (cifar.conv1.kernel_size, cifar.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(cifar.maxpool, nn.Identity)
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    # resolution entering layer1: 32 with the CIFAR stem, 32 / 4 = 8 with the ImageNet stem
    assert cifar.maxpool(cifar.relu(cifar.bn1(cifar.conv1(x)))).shape[-1] == 32
    assert imagenet.maxpool(imagenet.relu(imagenet.bn1(imagenet.conv1(x)))).shape[-1] == 8
    assert cifar(x).shape == imagenet(x).shape == (2, 512)


@pytest.mark.parametrize("cifar_stem", [True, False])
def test_resnet_takes_the_data_channels(cifar_stem):
    """1-channel digits: only the first convolution changes, by 64·k²·(3 − 1) weights."""
    gray, rgb = resnet((1, 8, 8), "resnet18", cifar_stem), resnet((3, 8, 8), "resnet18", cifar_stem)
    k = 3 if cifar_stem else 7
    assert gray.conv1.in_channels == 1
    assert n_params(rgb) - n_params(gray) == 64 * k * k * 2
    assert gray(torch.randn(4, 1, 8, 8)).shape == (4, 512)


def test_zero_init_residual_zeroes_the_last_norm_of_every_block():
    net = resnet((3, 32, 32), "resnet50", zero_init_residual=True)
    last_norms = [block.bn3.weight for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]
    assert len(last_norms) == 16 and all(not w.any() for w in last_norms)
    assert resnet((3, 32, 32), "resnet50").layer1[0].bn3.weight.eq(1).all()


# ------------------------------------------------------------- ntk parameterization


def excess_kurtosis(w: torch.Tensor) -> float:
    w = w.detach().double().flatten()
    w = w - w.mean()
    return (w.pow(4).mean() / w.pow(2).mean() ** 2).item() - 3


def test_ntk_mlp_is_the_explicit_formula():
    """h¹ = √(2/d)·W¹x + β b¹, h² = √(2/w)·W² relu(h¹) + β b², f = √(1/w)·W³ relu(h²)."""
    torch.manual_seed(0)
    d, w, beta = 64, 32, 0.1
    model = MLP((1, 8, 8), w, 2, 5, parameterization="ntk", bias_scale=beta).double()
    (l1, l2, l3) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(isinstance(m, NTKLinear) for m in (l1, l2, l3)) and l3.bias is None
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    h = x.flatten(1)
    h = torch.relu(math.sqrt(2 / d) * h @ l1.weight.T + beta * l1.bias)
    h = torch.relu(math.sqrt(2 / w) * h @ l2.weight.T + beta * l2.bias)
    torch.testing.assert_close(model(x), h @ l3.weight.T / math.sqrt(w), rtol=1e-12, atol=1e-12)


def test_ntk_weights_are_standard_normal():
    torch.manual_seed(0)
    model = MLP((1000,), 1000, 1, 1000, parameterization="ntk", init_scale=0.5)
    hidden, readout = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for weight, std in ((hidden.weight, 1.0), (hidden.bias, 1.0), (readout.weight, 0.5)):
        assert weight.double().std().item() == pytest.approx(std, rel=0.1 if weight.ndim == 1 else 0.01)
        if weight.ndim == 2:
            assert abs(excess_kurtosis(weight)) < 0.05


@pytest.mark.parametrize("network", ["mlp", "cnn"])
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_init_scale_multiplies_the_output_at_initialisation(network, parameterization):
    cls = {"mlp": MLP, "cnn": CNN}[network]
    x = torch.randn(5, 1, 8, 8)
    outputs = []
    for scale in (1.0, 1e-3):
        torch.manual_seed(0)
        outputs.append(cls((1, 8, 8), 16, 1, 4, init_scale=scale, parameterization=parameterization)(x))
    torch.testing.assert_close(outputs[1], 1e-3 * outputs[0], rtol=1e-5, atol=1e-9)


def test_ntk_cnn_is_myrtle5_with_scaled_convolutions():
    torch.manual_seed(0)
    model = CNN((1, 8, 8), width=6, depth=1, out_dim=3, parameterization="ntk", bias_scale=0.2).double()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(isinstance(c, NTKConv2d) for c in convs)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    h = x
    for i, conv in enumerate(convs):  # 8x8 → stem, stage 1 → pool 4x4 → stage 2 → pool 2x2 → stage 3
        fan_in = conv.in_channels * 9
        h = torch.relu(F.conv2d(h, math.sqrt(2 / fan_in) * conv.weight, 0.2 * conv.bias, padding=1))
        if i in (1, 2):
            h = F.avg_pool2d(h, 2)
    readout = model.net[-1]
    expected = h.mean((2, 3)) @ readout.weight.T / math.sqrt(6)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_standard_cnn_uses_he_initialisation():
    torch.manual_seed(0)
    model = CNN((3, 32, 32), width=256, depth=1, out_dim=8)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1]
    assert type(conv) is nn.Conv2d and not conv.bias.any()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.01)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 8)


def test_linear_projector_is_one_linear():
    proj = linear_projector(512, 128)
    assert [type(m) for m in proj] == [nn.Linear] and proj.out_dim == 128 and proj[0].bias is None


# ---------------------------------------------------------------- configs and errors


@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_option_builds_for_digits(config, backbone):
    model = instantiate(config(f"backbone={backbone}").backbone, in_shape=(1, 8, 8))
    check_part(model, Backbone, "backbone")
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, model.out_dim)


@pytest.mark.parametrize("projector", options("projector"))
def test_projector_options_size_themselves_from_the_backbone(config, projector):
    """Built on 512 backbone features, a projector gives its config's out_dim, or keeps
    the 512 where it has none (identity)."""
    cfg = config(f"projector={projector}").projector
    proj = instantiate(cfg, in_dim=512)
    assert proj(torch.randn(4, 512)).shape == (4, cfg.get("out_dim", 512))


def test_resnet18_trains_on_digits(config, tmp_path):
    cfg = config("backbone=resnet18", "projector=linear", "data.batch_size=32", "trainer.max_steps=2")
    assert math.isfinite(train(cfg, tmp_path)["loss"])


def test_unknown_backbone_lists_the_options(config):
    with pytest.raises(MissingConfigException) as info:
        config("backbone=resnet19")
    message = str(info.value)
    assert "Could not find 'backbone/resnet19'" in message
    for option in options("backbone"):
        assert option in message


def config_error(excinfo: pytest.ExceptionInfo) -> ConfigError:
    """The ConfigError behind Hydra's InstantiationException."""
    exc = excinfo.value
    while not isinstance(exc, ConfigError):
        exc = exc.__cause__
    return exc


@pytest.mark.parametrize("backbone", ["resnet18", "cnn"])
def test_explicit_channels_must_match_the_data(config, backbone):
    cfg = config(f"backbone={backbone}", "backbone.in_channels=3")
    with pytest.raises(Exception) as info:
        instantiate(cfg.backbone, in_shape=(1, 8, 8))
    message = str(config_error(info))
    assert "backbone.in_channels=3" in message and "1 channel" in message
    assert "backbone.in_channels=null" in message


def test_image_backbone_rejects_vector_data(config):
    cfg = config("backbone=resnet18")
    with pytest.raises(Exception) as info:
        instantiate(cfg.backbone, in_shape=(16,))
    assert "takes images of shape (C, H, W)" in str(config_error(info)) and "(16,)" in str(config_error(info))


def test_parameterization_lists_allowed_values(config):
    with pytest.raises(Exception) as info:
        config("backbone=mlp", "backbone.parameterization=mean_field")
    messages, exc = [], info.value
    while exc is not None:
        messages.append(str(exc))
        exc = exc.__cause__
    message = "\n".join(messages)
    assert "Invalid value 'mean_field', expected one of [standard, ntk]" in message
    assert "backbone.parameterization" in message

"""Methods: the step's named outputs and the loss each method needs."""

import re

import pytest
import torch
from torch import nn

from sslkit.errors import ConfigError
from sslkit.losses import VICRegLoss
from sslkit.methods import Siamese, StepOutput, check_loss


def test_siamese_applies_one_network_to_each_view():
    torch.manual_seed(0)
    backbone, projector = nn.Linear(5, 4), nn.Linear(4, 3)
    v1, v2 = torch.randn(8, 5), torch.randn(8, 5)
    out = Siamese(backbone, projector)(v1, v2)
    torch.testing.assert_close(out.h2, backbone(v2))
    torch.testing.assert_close(out.z1, projector(backbone(v1)))
    assert out.extra == {}


def test_map_keeps_h_is_z_and_can_leave_the_features():
    """Under an identity projector h is z; map must keep it one object, and with
    features=False only z and the extras are mapped."""
    z1, z2, t = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    calls = []
    out = StepOutput(z1, z2, z1, z2, {"t": t}).map(lambda x: calls.append(x) or x * 2)
    assert len(calls) == 3 and out.h1 is out.z1 and out.h2 is out.z2
    torch.testing.assert_close(out.extra["t"], 2 * t)
    h = torch.randn(4, 3)
    out = StepOutput(h, h, z1, z2).map(lambda x: x * 2, features=False)
    assert out.h1 is h and out.h2 is h
    torch.testing.assert_close(out.z2, 2 * z2)


def test_a_loss_that_misses_the_methods_extra_inputs_is_refused():
    class TargetMethod(Siamese):
        extra_inputs = ("t1", "t2")

    net = TargetMethod(nn.Identity(), nn.Identity())
    with pytest.raises(ConfigError, match=r"gives the loss \(z1, z2, t1, t2\).*VICRegLoss takes \(z1, z2\)") as error:
        check_loss(net, VICRegLoss())
    # the options that fit, by their signatures: BYOLLoss alone takes t1, t2; Siamese gives no extra
    assert "(loss=byol), or a method that gives what this loss takes (method=siamese)" in str(error.value)
    check_loss(Siamese(nn.Identity(), nn.Identity()), VICRegLoss())


@pytest.mark.parametrize("method, loss, fits", [
    ("byol", "barlow_twins_simplified", "loss=byol), or a method that gives what this loss takes (method=siamese)"),
    ("siamese", "byol", "loss=barlow_twins or loss=barlow_twins_simplified or loss=simclr or loss=vicreg), or a "
                        "method that gives what this loss takes (method=byol)"),
])
def test_a_method_and_loss_that_do_not_fit_name_the_options_that_do(config, method, loss, fits):
    """`sslkit-train method=byol` under the default experiment keeps the experiment's loss:
    the message lists, from configs/, each loss that takes the method's inputs and each
    method that gives the loss's; every option it names composes into a pair that fits."""
    from sslkit.train import check

    cfg = config("experiment=stepwise_digits", f"method={method}", f"loss={loss}")
    with pytest.raises(ConfigError) as error:
        check(cfg)
    assert fits in str(error.value), str(error.value)
    for option in re.findall(r"(?:loss|method)=\w+", fits):
        check(config("experiment=stepwise_digits", f"method={method}", f"loss={loss}", option))

"""Methods: the step's named outputs and the loss each method needs."""

import functools
import re

import pytest
import torch
from torch import nn

from conftest import compose_config, options
from sslkit.errors import ConfigError
from sslkit.losses import VICRegLoss
from sslkit.methods import BYOLLoss, Backbone, Loss, Method, Siamese, StepOutput, check_loss, check_part


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


@functools.cache
def fits(method: str, loss: str) -> str | None:
    """None if `method=<method> loss=<loss>` passes the check before training (under the
    default experiment, whose own loss an explicit loss= replaces), else check_loss's message."""
    from sslkit.train import check

    try:
        check(compose_config("experiment=stepwise_digits", f"method={method}", f"loss={loss}"))
    except ConfigError as error:
        assert "gives the loss" in str(error), str(error)
        return str(error)
    return None


def named(message: str, group: str) -> set[str]:
    """The options of `group` that check_loss's message offers."""
    offer = "a loss written for this method" if group == "loss" else "a method that gives what this loss takes"
    offered = re.search(rf"{offer} \((.*?)\)[,.]", message).group(1)
    return set(re.findall(rf"{group}=(\w+)", offered))


@pytest.mark.parametrize("method", options("method"))
def test_a_method_and_loss_that_do_not_fit_name_the_options_that_do(method):
    """Every method with every loss of configs/, each pair checked as a run checks it: a
    pair that does not fit is refused, and the message offers exactly the losses that do
    fit the method and the methods that do fit the loss; every method has a loss."""
    refused = {loss: fits(method, loss) for loss in options("loss")}
    fitting = {loss for loss, message in refused.items() if message is None}
    assert fitting, f"no option of configs/loss/ fits method={method}"
    for loss, message in refused.items():
        if message is not None:
            assert named(message, "loss") == fitting, message
            assert named(message, "method") == {m for m in options("method") if fits(m, loss) is None}, message


class WithoutAfterStep(nn.Module):
    """A method as Siamese, less the after-step hook."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, v1, v2) -> StepOutput:
        return Siamese.forward(self, v1, v2)


def test_a_method_without_after_step_is_refused_before_training(tmp_path):
    """Refused when the run builds its step, naming the class, the hook and the doc's
    section; nothing is trained or written (it was an AttributeError after step 0)."""
    from sslkit.train import check, train

    cfg = compose_config("method._target_=test_methods.WithoutAfterStep", "trainer.max_steps=3")
    expected = (r"^method: WithoutAfterStep \(test_methods.WithoutAfterStep\) has no after_step\(step, total_steps, "
                r"applied\), which every method has\..*docs/extending.md, \"A method\"")
    for run in (lambda: check(cfg), lambda: train(cfg, tmp_path / "run")):
        with pytest.raises(ConfigError, match=expected) as error:
            run()
        assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_method_without_extra_inputs_gives_none():
    """extra_inputs is optional: WithoutAfterStep has none, so it fits a loss of (z1, z2)
    alone and is refused with BYOL's, whose message says it gives (z1, z2)."""
    net = WithoutAfterStep(nn.Identity(), nn.Identity())
    assert not hasattr(net, "extra_inputs")
    check_loss(net, VICRegLoss())
    with pytest.raises(ConfigError, match=r"gives the loss \(z1, z2\), but the loss BYOLLoss takes \(z1, z2, t1, t2\)"):
        check_loss(net, BYOLLoss())


class WithoutBackbone(nn.Module):
    """A method that keeps only its networks' composition, not the backbone evaluation reads."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.net = nn.Sequential(backbone, projector)

    def forward(self, v1, v2) -> StepOutput:
        return StepOutput(v1, v2, self.net(v1), self.net(v2))

    def after_step(self, step, total_steps, applied) -> None:
        pass


@pytest.mark.parametrize("part, protocol, group, reads", [
    (nn.Linear(3, 2), Backbone, "backbone", "out_dim"),  # the projector could not size itself
    (WithoutBackbone(nn.Identity(), nn.Identity()), Method, "method", "backbone"),
    (nn.Module(), Loss, "loss", "forward(z1, z2, **extra)"),  # nn.Module's forward only raises
])
def test_each_protocol_names_the_member_a_part_lacks(part, protocol, group, reads):
    cls = type(part)
    with pytest.raises(ConfigError, match=re.escape(f"{group}: {cls.__name__} ({cls.__module__}.{cls.__qualname__}) "
                                                    f"has no {reads}, which every {group} has.")):
        check_part(part, protocol, group)

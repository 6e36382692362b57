"""The two-view model: one backbone and one projector applied to both views."""

from torch import Tensor, nn


class Siamese(nn.Module):
    """(v1, v2) ↦ (h1, h2, z1, z2): backbone features h and projector embeddings z.

    Each view goes through the network in its own call, so BatchNorm layers normalise
    each view with its own batch statistics, as in the official Barlow Twins and VICReg
    code; one `forward` per step keeps DistributedDataParallel's bookkeeping simple."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h1, h2 = self.backbone(v1), self.backbone(v2)
        return h1, h2, self.projector(h1), self.projector(h2)

"""Joint-embedding SSL losses: Barlow Twins, SimCLR's NT-Xent and VICReg.

Each loss is an ``nn.Module`` whose ``forward(z1, z2)`` takes the (N, D) embeddings
of two views of the same N samples and returns a :class:`LossOutput`.
"""

from sslkit.losses.barlow_twins import BarlowTwinsLoss
from sslkit.losses.output import LossOutput
from sslkit.losses.simclr import NTXentLoss
from sslkit.losses.vicreg import VICRegLoss

__all__ = ["BarlowTwinsLoss", "NTXentLoss", "VICRegLoss", "LossOutput"]

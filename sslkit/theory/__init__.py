"""Theory that the training runs are compared with (docs/theory.md): neural tangent
kernels, the stepwise dynamics of the simplified Barlow Twins loss, and kernel-regime
optima."""

from sslkit.theory.kernels import dense_ntk, empirical_ntk, relu_ntk

__all__ = ["dense_ntk", "empirical_ntk", "relu_ntk"]

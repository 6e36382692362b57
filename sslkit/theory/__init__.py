"""Theory that the training runs are compared with: neural tangent kernels."""

from sslkit.theory.kernels import empirical_ntk, relu_ntk

__all__ = ["empirical_ntk", "relu_ntk"]

"""Lowering the IR to PyTorch: a fixed network or a supernet."""

from spacelang.backends.torch.fixed import FixedNet, build_fixed
from spacelang.backends.torch.supernet import SuperNet, build_supernet

__all__ = ["FixedNet", "SuperNet", "build_fixed", "build_supernet"]

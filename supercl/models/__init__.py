"""Networks: the 2D U-Net, its encoder and the SuperCL projection head.

>>> from supercl.models import UNet, UNetEncoder, SuperCLModel
"""

from .unet import ProjectionHead, SuperCLModel, UNet, UNetDecoder, UNetEncoder

__all__ = ["UNet", "UNetEncoder", "UNetDecoder", "ProjectionHead", "SuperCLModel"]

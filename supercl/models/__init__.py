"""Networks: the 2D U-Net, its encoder and the SuperCL projection head; the backbones a run
can pre-train instead (nnU-Net's planned network, MONAI's BasicUNet: :mod:`.backbones`).

>>> from supercl.models import UNet, UNetEncoder, SuperCLModel, backbone_of
"""

from .backbones import BACKBONES, backbone_of
from .unet import ProjectionHead, SuperCLModel, UNet, UNetDecoder, UNetEncoder

__all__ = ["UNet", "UNetEncoder", "UNetDecoder", "ProjectionHead", "SuperCLModel", "BACKBONES",
           "backbone_of"]

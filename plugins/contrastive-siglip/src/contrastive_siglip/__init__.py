"""contrastive-siglip: the sigmoid loss of SigLIP as a contrastive-kit plugin."""

from contrastive_siglip.loss import SigLipLoss, siglip_loss

__all__ = ["SigLipLoss", "siglip_loss"]
__version__ = "0.1.0"

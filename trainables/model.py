"""The multi-task U-Net: smp.Unet whose decoder predicts a 1-channel gaze heatmap (logits) and whose
auxiliary head predicts the 3 class logits (Normal, CHF, pneumonia), as in Watanabe et al. 2022.

Grey input goes in as ONE channel (``in_channels=1``): smp adapts ImageNet weights by summing the first
convolution's RGB kernels, which equals feeding the grey image replicated three times at a third of the
first layer's cost, and the saliency maps come out single-channel with no channel reduction to argue about.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from trainables.task import Task

# ImageNet mean/std averaged over RGB: the statistics a grey image replicated to RGB would be normalised with.
GREY_MEAN, GREY_STD = 0.449, 0.226


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights could not be obtained."""


class MultiTaskUNet(nn.Module):
    """Wraps ``smp.Unet(..., aux_params=...)``; takes [0, 1] grey images (B, 1, H, W).

    ``forward`` returns ``(mask_logits (B,1,H,W), class_logits (B,3))``; ``classify`` runs only the
    encoder and the classification head (what the saliency generators and the ``no-seg`` arm need).
    """

    def __init__(self, unet: smp.Unet, exclusive: bool = True):
        super().__init__()
        self.unet = unet
        self.exclusive = exclusive  # softmax over the classes (one per image), else sigmoid each

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - GREY_MEAN) / GREY_STD

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask_logits, class_logits = self.unet(self.normalise(x))
        return mask_logits, class_logits

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        features = self.unet.encoder(self.normalise(x))
        return self.unet.classification_head(features[-1])

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder


def check_encoder(name: str) -> None:
    """Refuse an encoder smp cannot build, before any data is read or Ray starts (a study would
    otherwise fail every trial after preparing its data).

    Raises:
        ValueError: naming the encoder, with where valid names come from.
    """
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise ValueError(
                f"unknown encoder {name!r}: {name[3:]!r} is not a timm model "
                f"(timm.list_models() lists them; e.g. tu-test_efficientnet)"
            )
        return
    names = smp.encoders.get_encoder_names()
    if name not in names:
        raise ValueError(
            f"unknown encoder {name!r}; smp encoders: {', '.join(sorted(names)[:12])}, ... "
            f"(or tu-<timm model>)"
        )


def build_model(
    encoder: str = "efficientnet-b0",
    encoder_weights: str | None = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    patch_activations: bool = True,
    bn_momentum: float = 0.1,
    task: Task | None = None,
) -> MultiTaskUNet:
    """Build the multi-task U-Net.

    Args:
        encoder: any smp encoder name (``smp.encoders.get_encoder_names()``), ``tu-<timm name>`` included.
        encoder_weights: ``"imagenet"`` (downloaded by smp), a path to a local encoder state dict (``.pth``,
            3-channel keys as smp saves them), or ``None``/``"none"`` for random initialisation.
        decoder_channels: U-Net decoder widths, one per encoder stage.
        patch_activations: replace ReLU/SiLU modules with rule-switchable ones so the GBP / deconvNet
            generators can run through the model (forward and normal-mode gradients are unchanged).
        bn_momentum: momentum of every BatchNorm's running statistics (PyTorch convention).
        task: the classes the head predicts (default: the default dataset's, EGD-CXR's).

    Returns:
        The model, in train mode, on the CPU.

    Raises:
        EncoderWeightsError: ImageNet weights could not be downloaded, or the local file does not load.
        KeyError: unknown encoder name (smp lists the valid ones).
    """
    if task is None:
        from trainables.data.datasets import task_of

        task = task_of("egd-cxr")  # the default dataset's
    weights = None if encoder_weights in (None, "", "none", "None") else encoder_weights
    local = weights is not None and weights != "imagenet"
    if local and not Path(weights).is_file():
        raise EncoderWeightsError(f"encoder weights file not found: {weights}")
    smp_weights = None if local else weights
    if smp_weights is not None and encoder.startswith("tu-"):
        smp_weights = True  # timm-universal encoders take True for "pretrained"
    kwargs = {
        "encoder_name": encoder,
        "encoder_depth": len(decoder_channels),
        "decoder_channels": tuple(decoder_channels),
        "classes": 1,
        "aux_params": {"classes": task.n, "dropout": 0.2},
    }
    try:
        unet = smp.Unet(encoder_weights=smp_weights, in_channels=3 if local else 1, **kwargs)
    except KeyError:
        raise
    except Exception as err:  # network / hub errors surface as many types
        if smp_weights is None:
            raise
        raise EncoderWeightsError(
            f"could not obtain '{encoder_weights}' weights for encoder '{encoder}' ({type(err).__name__}: "
            f"{err}). Offline? Pass --encoder-weights none (random init) or --encoder-weights "
            f"/path/to/encoder.pth (a local encoder state dict)."
        ) from err
    if local:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            unet.encoder.load_state_dict(state.get("state_dict", state))
        except Exception as err:
            raise EncoderWeightsError(
                f"could not load encoder weights from {weights}: {err}"
            ) from err
        unet.encoder.set_in_channels(1, pretrained=True)  # sums the RGB kernels of the first conv
    for module in unet.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # smp's EfficientNet keeps TF's 0.99 decay (momentum 0.01): its running statistics need
            # hundreds of steps to leave their init, so eval-mode predictions of a short run (or of
            # ImageNet statistics on radiographs) stay wrong; PyTorch's default adapts within an epoch.
            module.momentum = bn_momentum
    model = MultiTaskUNet(unet, exclusive=task.exclusive)
    if patch_activations:
        from trainables.activations import patch_activations as _patch

        _patch(model)
    return model

"""``pipeline("image-classification")``: photographs in, the top-k ImageNet (or your) classes out.

Preprocessing is the official evaluation's (:func:`~perceiver_io.data.augment.eval_transform`): the central
``224/256`` of the short side, resized bicubic to the model's configured image size, ImageNet mean / std. Images are
PIL images, image files (anything PIL reads; EXIF orientation applied) or ``[C, H, W]`` tensors (uint8 0..255 or
float in [0, 1]; 1 channel is grey, 4 is RGBA without its alpha).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.validation import check_positive
from .base import ModelLike, Pipeline, check_class_names, check_file, check_top_k, is_path, one_line, top_classes

IMAGE_INPUT = "a PIL image, an image file path or a [C, H, W] tensor"


def imagenet_class_names(num_classes: int) -> list[str] | None:
    """The 1000 ImageNet class names in the usual order (as torchvision ships them, offline), for a 1000-class
    model; None for any other number of classes."""
    if num_classes != 1000:
        return None
    from torchvision.models import ResNet50_Weights  # the names are in torchvision's source: nothing is downloaded

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def open_image(name: str, path: Any) -> Any:
    """The image file ``path`` as an RGB ``PIL.Image`` (EXIF orientation applied; the first frame of an animation).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a directory or a file PIL cannot read,
    naming ``name`` and the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_file(name, path, "image file")
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{name}: {path} is not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for truncated or corrupt data
        raise ValueError(f"{name}: {path}: corrupt or unreadable image ({one_line(err)})") from None


def check_image_tensor(name: str, image: torch.Tensor) -> torch.Tensor:
    """``image [C, H, W]`` (C = 1 grey, 3 RGB or 4 RGBA; uint8 0..255 or floating in [0, 1], finite) as ``[3, H, W]``
    of the same dtype; a ``ValueError`` / ``TypeError`` naming ``name`` otherwise."""
    if image.ndim != 3:
        raise ValueError(f"{name}: expected an image tensor of shape [C, H, W], got {list(image.shape)}")
    channels, height, width = image.shape
    if channels not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1, 3 or 4 channels first ([C, H, W]), got shape {list(image.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"{name}: empty image of shape {list(image.shape)}")
    if image.dtype != torch.uint8:
        if not image.is_floating_point():
            raise TypeError(f"{name}: expected a uint8 (0..255) or float ([0, 1]) tensor, got dtype {image.dtype}")
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:  # e.g. an already normalised image, or 0..255 as floats
            raise ValueError(f"{name}: expected float values in [0, 1] (or a uint8 tensor for 0..255), got values "
                             f"in [{low:.3g}, {high:.3g}]")
    if channels == 1:
        return image.expand(3, height, width)
    return image[:3]


def as_image(name: str, value: Any) -> Any:
    """An RGB ``PIL.Image`` (from a file or a PIL image) or a checked ``[3, H, W]`` tensor, from any image input."""
    from PIL import Image

    if is_path(value):
        return open_image(name, value)
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, torch.Tensor):
        return check_image_tensor(name, value.detach().cpu())
    raise TypeError(f"{name}: expected {IMAGE_INPUT}, got {type(value).__name__}")


def is_image(value: Any) -> bool:
    from PIL import Image

    return is_path(value) or isinstance(value, Image.Image) or (isinstance(value, torch.Tensor) and value.ndim == 3)


def _image_size(model: nn.Module) -> int:
    """The model's configured (square, RGB) image size: ``input_adapter.config.image_shape = (3, S, S)``."""
    channels, height, width = model.input_adapter.config.image_shape  # type: ignore[union-attr]
    if channels != 3:
        raise ValueError(f"model: the image-classification pipeline reads RGB images (ImageNet mean / std); this model "
                         f"takes {channels} channel(s)")
    if height != width:
        raise ValueError(f"model: the official evaluation crop is square; this model's image_shape is {height}x{width}")
    return int(height)


class ImageClassificationPipeline(Pipeline):
    """``pipe(images)`` -> the ``top_k`` classes of each image, ``[{"label": name, "score": probability}, ...]``.

    Args:
        model: an :class:`~perceiver_io.models.ImageClassifier` (RGB, square ``image_shape``), or a name or path
            for :func:`perceiver_io.from_pretrained`.
        class_names: one name per class. Default: the ImageNet names for a 1000-class model, else ``class_<i>``.
        top_k: classes returned per image (capped at the number of classes).
        batch_size: images per forward pass.
        device: where the model runs (default: where it is).

    Attributes: ``image_size`` (the model's), ``transform`` (the official eval transform at that size),
    ``class_names``, ``num_classes``.
    """

    task = "image-classification"

    def __init__(self, model: ModelLike, *, class_names: Sequence[str] | None = None, top_k: int = 5,
                 batch_size: int = 16, device: str | torch.device | None = None) -> None:
        super().__init__(model, device=device)
        from ..data.augment import eval_transform  # imports torchvision's transforms: only when a pipeline is made

        self.image_size = _image_size(self.model)
        self.transform = eval_transform(self.image_size)
        self.num_classes = int(self.model.output_adapter.config.num_classes)  # type: ignore[union-attr]
        self.class_names = check_class_names(class_names, self.num_classes, imagenet_class_names)
        self.top_k = check_top_k(top_k, self.num_classes)
        check_positive("batch_size", batch_size)
        self.batch_size = batch_size

    @classmethod
    def model_types(cls) -> tuple[type[nn.Module], ...]:
        from ..models import ImageClassifier

        return (ImageClassifier,)

    def preprocess(self, image: Any, name: str = "image") -> torch.Tensor:
        """One image (any input type) -> ``[3, S, S]`` float32, what the model reads (``S = image_size``)."""
        return self.transform(as_image(name, image))

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels [B, 3, S, S]`` (preprocessed) -> the model's logits ``[B, num_classes]`` (on the CPU, float32)."""
        return self.model(pixels.to(self.device, self.dtype)).float().cpu()

    def __call__(self, images: Any, *, top_k: int | None = None) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """The top classes of one image (a list of ``{"label", "score"}``, best first) or of each image of a list
        (or of a ``[B, C, H, W]`` tensor): a list of such lists.

        Raises:
            TypeError, ValueError, FileNotFoundError: an input that is not an image (naming it, e.g.
                ``images[2]: photo.txt is not an image file``); a bad ``top_k``.
        """
        k = self.top_k if top_k is None else check_top_k(top_k, self.num_classes)
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images.unbind(0))

        def predict(items: list[Any], names: list[str]) -> list[list[dict[str, Any]]]:
            pixels = [self.preprocess(item, name) for item, name in zip(items, names)]  # every input checked first
            results = []
            for first in range(0, len(pixels), self.batch_size):
                batch = torch.stack(pixels[first:first + self.batch_size])
                results.extend(top_classes(self.logits(batch), self.class_names, k))
            return results

        return self._batched(images, "images", IMAGE_INPUT, is_image, predict)

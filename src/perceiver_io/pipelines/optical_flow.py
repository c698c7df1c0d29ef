"""``pipeline("optical-flow")``: frame pairs in, the flow and its colour picture out.

Built on :mod:`perceiver_io.flow_tool`: frame files are read by :func:`~perceiver_io.flow_tool.read_frame` (RGB PNG,
JPEG, WebP, GIF), the flow is :func:`~perceiver_io.flow_tool.estimate_flow` (any frame size: frames larger than the
model's training size run as the official overlapping tiles) and its picture
:func:`~perceiver_io.flow_tool.flow_image`. Frames may also be PIL images or ``[C, H, W]`` tensors (uint8 0..255 or
float in [0, 1], as for image classification; RGBA loses its alpha, grey is repeated to RGB, as PIL images are
converted; only frame files follow ``read_frame``'s stricter rule: a greyscale file is an error).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.validation import check_choice, check_positive
from ..models.flow import TILING_MODES
from .base import ModelLike, Pipeline, is_path
from .image_classification import check_image_tensor, is_image

PAIR_INPUT = "a pair of frames (frame1, frame2): image file paths, PIL images or [C, H, W] tensors"


def is_pair(value: Any) -> bool:
    """Whether ``value`` is one pair of frames (rather than a list of pairs)."""
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(is_image(v) for v in value)


def read_frame_input(name: str, value: Any) -> torch.Tensor:
    """A frame of any input type as ``[3, H, W]`` uint8 (file: :func:`~perceiver_io.flow_tool.read_frame`) or float
    in [-1, 1] (float tensors, mapped from [0, 1]): what :func:`~perceiver_io.flow_tool.estimate_flow` reads."""
    from PIL import Image

    from ..flow_tool import read_frame

    if is_path(value):
        try:
            return read_frame(value)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
    if isinstance(value, Image.Image):
        return torch.from_numpy(np.array(value.convert("RGB"))).permute(2, 0, 1).contiguous()
    if isinstance(value, torch.Tensor):
        frame = check_image_tensor(name, value.detach().cpu())
        return frame if frame.dtype == torch.uint8 else frame.float() * 2.0 - 1.0  # estimate_flow's float range
    raise TypeError(f"{name}: expected an image file path, a PIL image or a [C, H, W] tensor, got "
                    f"{type(value).__name__}")


class OpticalFlowPipeline(Pipeline):
    """``pipe((frame1, frame2))`` -> ``{"flow": np.ndarray [H, W, 2] float32 (x, y in pixels, frame 1 -> frame 2),
    "image": PIL.Image}`` (the flow's colour picture: hue = direction, saturation = magnitude).

    Args:
        model: an optical-flow model (:data:`perceiver_io.flow_tool.FLOW_MODEL_CLASSES`), or a name or path for
            :func:`perceiver_io.from_pretrained`.
        tiling, min_overlap, tile_batch_size: as :func:`~perceiver_io.flow_tool.estimate_flow`.
        device: where the model runs (default: where it is).
    """

    task = "optical-flow"

    def __init__(self, model: ModelLike, *, tiling: str = "auto", min_overlap: int = 20,
                 tile_batch_size: int | None = None, device: str | torch.device | None = None) -> None:
        check_choice("tiling", tiling, TILING_MODES)
        check_positive("min_overlap", min_overlap)
        if tile_batch_size is not None:
            check_positive("tile_batch_size", tile_batch_size)
        super().__init__(model, device=device)
        self.options = {"tiling": tiling, "min_overlap": min_overlap, "tile_batch_size": tile_batch_size}

    @classmethod
    def model_types(cls) -> tuple[type[nn.Module], ...]:
        from ..flow_tool import FLOW_MODEL_CLASSES

        return FLOW_MODEL_CLASSES

    def flow(self, frame1: Any, frame2: Any, name: str = "pair") -> torch.Tensor:
        """The flow ``[2, H, W]`` float32 (CPU) from ``frame1`` to ``frame2`` (any frame input types)."""
        from ..flow_tool import estimate_flow

        first = read_frame_input(f"{name}[0]", frame1)
        second = read_frame_input(f"{name}[1]", frame2)
        try:
            return estimate_flow(self.model, first, second, **self.options).cpu()
        except (TypeError, ValueError) as err:  # estimate_flow names frame1 / frame2; say which pair
            raise type(err)(f"{name}: {err}") from None

    def __call__(self, pairs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """The flow of one pair ``(frame1, frame2)`` (a dict) or of each pair of a list (a list of dicts).

        Raises:
            TypeError, ValueError, FileNotFoundError: not a pair, a frame that is not an image, frames of different
                sizes (naming the pair and the frame, e.g. ``pairs[1][0]: ...``).
        """
        from PIL import Image

        from ..flow_tool import flow_image

        def predict(items: list[Any], names: list[str]) -> list[dict[str, Any]]:
            for item, name in zip(items, names):
                if not is_pair(item):
                    got = f"{len(item)} items" if isinstance(item, (list, tuple)) else type(item).__name__
                    raise TypeError(f"{name}: expected {PAIR_INPUT}, got {got}")
            results = []
            for (frame1, frame2), name in zip(items, names):
                flow = self.flow(frame1, frame2, name)
                picture = flow_image(flow).permute(1, 2, 0).numpy()
                results.append({"flow": flow.permute(1, 2, 0).numpy().astype(np.float32),
                                "image": Image.fromarray(np.ascontiguousarray(picture))})
            return results

        return self._batched(pairs, "pairs", PAIR_INPUT, is_pair, predict)

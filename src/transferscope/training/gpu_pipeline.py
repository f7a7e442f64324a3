"""Image files to training batches with decoding and augmentation on the device (JPEG to GPU).

The streamed sources (``imagefolder``, ``domainnet``, ``chexpert``) normally decode with PIL in
``DataLoader`` worker processes (:func:`transferscope.training.loaders.iterate`). On a GPU that
path is bounded by the CPU: a 224-px ResNet-50 step on an H100 eats ~4,000 images/s, more than a
few CPU cores decode and crop. :class:`DevicePipeline` instead

1. reads the files' bytes in a thread pool (plain reads: the GIL is released while waiting),
2. decodes JPEGs in one batched ``torchvision.io.decode_jpeg(..., device=device)`` call (nvJPEG on
   CUDA; libjpeg-turbo when ``device`` is the CPU, which is how the tests exercise this path);
   other formats (PNG, ...) are decoded on the CPU and copied over,
3. applies the dataset's own torchvision ``v2`` transform to each decoded uint8 (C, H, W) tensor
   on the device, drawing the random parameters of RandomResizedCrop, RandomHorizontalFlip and
   RandomAffine from a private ``torch.Generator`` seeded with the sample's seed,
4. stacks the batch; all of this runs one batch ahead in a background thread (on its own CUDA
   stream), so loading overlaps the training step.

Same augmentation as the CPU path: a worker fetches a sample with torch's global generator seeded
from the sample's seed (:class:`~transferscope.training.loaders.SeededItems`) and the transforms
draw from it; here the same seed goes to a private generator and the draws are made in the same
order with the same calls, so each sample gets the very same crop box, flip and affine parameters
(checked against torchvision's own ``make_params`` in ``tests/test_gpu_pipeline.py``). What differs
is the resampling kernel: torchvision's tensor resize instead of PIL's (within a few grey levels).
No draw touches the global generator, so the background thread cannot disturb the training
step's random numbers and batches are the same for any number of reader threads.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from transferscope.data.folder_common import SKIP_HINT, BadImageError, FileImageDataset, load_image
from transferscope.errors import TransferscopeError

JPEG_MAGIC = b"\xff\xd8\xff"
# torchvision 0.29 deprecates its decoders in favour of TorchCodec, warning on every call; they
# are what this module uses (TorchCodec is not a dependency), so that one warning is silenced.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)


def read_bytes(path: str) -> bytes:
    """The file's bytes; a missing file is a :class:`BadImageError` naming it."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise BadImageError(
            f"image file not found: {path} (was it moved or deleted after the dataset was "
            f"built?); {SKIP_HINT}"
        ) from exc


# ---------------------------------------------------------------------------- random parameters
# Replicas of torchvision v2's make_params with an explicit generator: the same calls in the same
# order, so Generator().manual_seed(s) draws what torch.manual_seed(s) makes the CPU path draw.


def resized_crop_params(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> dict[str, int]:
    """RandomResizedCrop's box for an image of ``height`` x ``width`` pixels: top, left, height,
    width in pixels (torchvision's algorithm: 10 tries, then a centre crop)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(
            torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item()
        )
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return {"top": top, "left": left, "height": h, "width": w}
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return {"top": (height - h) // 2, "left": (width - w) // 2, "height": h, "width": w}


def flip_drawn(p: float, generator: torch.Generator) -> bool:
    """Whether RandomHorizontalFlip(p) flips: torchvision skips when ``rand >= p``."""
    return bool(torch.rand(1, generator=generator).item() < p)


def affine_params(t: Any, height: int, width: int, generator: torch.Generator) -> dict[str, Any]:
    """RandomAffine ``t``'s angle (degrees), translate (pixels), scale and shear (degrees)."""

    def uniform(lo: float, hi: float) -> float:
        return float(torch.empty(1).uniform_(lo, hi, generator=generator).item())

    angle = uniform(t.degrees[0], t.degrees[1])
    translate = [0, 0]
    if t.translate is not None:
        max_dx, max_dy = float(t.translate[0] * width), float(t.translate[1] * height)
        translate = [round(uniform(-max_dx, max_dx)), round(uniform(-max_dy, max_dy))]
    scale = uniform(t.scale[0], t.scale[1]) if t.scale is not None else 1.0
    shear = [0.0, 0.0]
    if t.shear is not None:
        shear[0] = uniform(t.shear[0], t.shear[1])
        if len(t.shear) == 4:
            shear[1] = uniform(t.shear[2], t.shear[3])
    return {"angle": angle, "translate": translate, "scale": scale, "shear": shear}


def _steps(transform: Any) -> list[Any]:
    """The flat list of steps of a (possibly nested) ``v2.Compose``."""
    from torchvision.transforms import v2

    if isinstance(transform, v2.Compose):
        return [s for t in transform.transforms for s in _steps(t)]
    return [transform]


def apply_seeded(
    transform: Callable[[Any], torch.Tensor], image: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``transform`` applied to a uint8 (C, H, W) ``image`` tensor, its random draws made from
    ``generator`` (never torch's global generator). Returns what ``transform`` returns: a float32
    (C', S, S) tensor for the sources' pipelines, on ``image``'s device.

    Raises:
        TransferscopeError: ``transform`` holds a random step this module cannot replay.
    """
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    x: Any = image
    for step in _steps(transform):
        h, w = x.shape[-2:]
        if isinstance(step, v2.RandomResizedCrop):
            box = resized_crop_params(h, w, step.scale, step.ratio, generator)
            x = F.resized_crop(
                x, **box, size=step.size, interpolation=step.interpolation, antialias=step.antialias
            )
        elif isinstance(step, v2.RandomHorizontalFlip):
            if flip_drawn(step.p, generator):
                x = F.horizontal_flip(x)
        elif isinstance(step, v2.RandomAffine):
            params = affine_params(step, h, w, generator)
            x = F.affine(
                x, **params, interpolation=step.interpolation, fill=step.fill, center=step.center
            )
        elif _draws(step):
            raise TransferscopeError(
                f"decoding on the device cannot replay the random transform "
                f"{type(step).__name__}; set performance.decode: workers"
            )
        else:
            x = step(x)
    return x


def _draws(step: Any) -> bool:
    """Whether a v2 transform draws random numbers (other than the three replayed above)."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2._transform import _RandomApplyTransform

    if not isinstance(step, v2.Transform):
        return False  # the sources' own steps (Equalize, ResizeLongSideAndPad) draw nothing
    if isinstance(step, _RandomApplyTransform):
        return True
    # make_params is where v2 transforms draw; those that draw nothing keep the base one.
    return type(step).make_params is not v2.Transform.make_params and not isinstance(
        step, v2.Resize | v2.CenterCrop | v2.Pad
    )


# ---------------------------------------------------------------------------- decoding


def decode(
    data: Sequence[bytes], paths: Sequence[str], mode: str, device: torch.device
) -> list[torch.Tensor]:
    """Decode images to uint8 (C, H, W) tensors on ``device`` (C = 3 for mode 'RGB', 1 for 'L').

    JPEGs go through one batched ``decode_jpeg`` call on ``device``; other formats, and any JPEG
    the batched call rejects, are decoded on the CPU (torchvision, then PIL for what torchvision
    cannot read). A file nothing can decode raises :class:`BadImageError` naming it.
    """
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    out: list[torch.Tensor | None] = [None] * len(data)
    jpeg = [i for i, d in enumerate(data) if d[:3] == JPEG_MAGIC]
    if jpeg:
        tensors = [torch.frombuffer(bytearray(data[i]), dtype=torch.uint8) for i in jpeg]
        try:
            decoded = decode_jpeg(tensors, mode=read_mode, device=device)
        except RuntimeError:
            decoded = [None] * len(jpeg)  # one bad file fails the batch: decode one by one below
        for i, image in zip(jpeg, decoded, strict=True):
            out[i] = image
    for i, image in enumerate(out):
        if image is not None:
            continue
        try:
            image = decode_image(
                torch.frombuffer(bytearray(data[i]), dtype=torch.uint8), mode=read_mode
            )
            if image.dtype != torch.uint8:
                raise RuntimeError("not 8 bits per channel")
        except RuntimeError:
            from torchvision.transforms.v2.functional import pil_to_tensor

            image = pil_to_tensor(load_image(paths[i], mode))  # type: ignore[arg-type]
        out[i] = image.to(device, non_blocking=True)
    return out  # type: ignore[return-value]


class DevicePipeline:
    """Batches of a :class:`FileImageDataset` decoded and augmented on ``device``.

    Args:
        dataset: the streamed dataset; its ``transform`` (a torchvision v2 pipeline that accepts
            uint8 tensors) is applied on the device.
        device: where images are decoded and augmented, and where batches are returned.
        threads: file-reading threads (default: the CPU count, at most 16).
        prefetch: batches prepared ahead of the one being consumed.
    """

    def __init__(
        self,
        dataset: FileImageDataset,
        device: torch.device | str,
        threads: int | None = None,
        prefetch: int = 2,
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.threads = threads or min(16, os.cpu_count() or 1)
        self.prefetch = max(1, prefetch)

    def load(self, indices: Sequence[int], seeds: Sequence[int] | None) -> torch.Tensor:
        """One batch: float32 (B, C, S, S) on the device, sample ``j`` of ``indices`` transformed
        with a generator seeded from ``seeds[j]`` (None: seed 0 for all, for deterministic
        eval transforms)."""
        ds = self.dataset
        paths = [ds.paths[i] for i in indices]
        with ThreadPoolExecutor(self.threads) as pool:
            data = list(pool.map(read_bytes, paths))
        images = decode(data, paths, ds.mode, self.device)
        out = []
        for j, image in enumerate(images):
            gen = torch.Generator().manual_seed(int(seeds[j]) if seeds is not None else 0)
            out.append(apply_seeded(ds.transform, image, gen))
        return torch.stack(out)

    def batches(
        self,
        batch_size: int,
        order: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, targets)`` on the device in ``order`` (default 0..N-1), one batch prepared
        ahead in a background thread (on a side CUDA stream when the device is CUDA)."""
        idx = order.tolist() if order is not None else list(range(len(self.dataset)))
        sd = seeds.tolist() if seeds is not None else None
        if sd is not None and len(sd) != len(idx):
            raise ValueError("seeds need an order of the same length")
        starts = list(range(0, len(idx), batch_size))
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        results: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for start in starts:
                    if stop.is_set():
                        return
                    part = idx[start : start + batch_size]
                    part_seeds = sd[start : start + batch_size] if sd is not None else None
                    if stream is not None:
                        with torch.cuda.stream(stream):
                            x = self.load(part, part_seeds)
                            event = torch.cuda.Event()
                            event.record(stream)
                    else:
                        x, event = self.load(part, part_seeds), None
                    results.put((x, event, part))
            except BaseException as e:  # re-raised in the consuming thread
                results.put(e)

        worker = threading.Thread(target=produce, daemon=True, name="transferscope-decode")
        worker.start()
        try:
            for _ in starts:
                item = results.get()
                if isinstance(item, BaseException):
                    raise item
                x, event, part = item
                if event is not None:
                    torch.cuda.current_stream(self.device).wait_event(event)
                    x.record_stream(torch.cuda.current_stream(self.device))
                y = self.dataset.targets[torch.as_tensor(part, dtype=torch.long)]
                yield x, y.to(self.device, non_blocking=cuda)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    results.get_nowait()
                except queue.Empty:
                    worker.join(0.05)

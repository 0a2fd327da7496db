"""Training and validation images, and a data loader whose order survives a restart.

Per training sample (spec §14.1): random 256x256 crop, reflect-padding images smaller than the crop
as torchvision's ``RandomCrop(256, pad_if_needed=True, padding_mode='reflect')`` does, horizontal
flip with probability 0.5, then ``x = 2 * (u8 / 255) - 1`` in float32 (bit-identical to the authors'
``ToTensor`` + ``Normalize(0.5, 0.5)``, spec §11). No resizing.

Determinism. :class:`ResumableSampler` is the only source of randomness: the order of an epoch is a
permutation drawn from ``(seed, epoch)``, and each sample comes with its own augmentation seed drawn
from ``(seed, epoch, index)``. Crops and flips therefore do not depend on the number of workers, on
which worker loads a sample, or on whether the run was interrupted: a run resumed with
``set_epoch(epoch, skip)`` sees exactly the samples, crops and flips of the uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from crdr.errors import ImageError, ParameterError
from crdr.files import find_files
from crdr.suffixes import TRAINING_SUFFIXES

__all__ = [
    "ImageFolderDataset",
    "ResumableSampler",
    "SampleKey",
    "SyntheticImageDataset",
    "find_images",
    "make_loader",
    "to_model_range",
    "validation_images",
]


class SampleKey(NamedTuple):
    """What the sampler yields: the dataset index and the seed of that sample's augmentation."""

    index: int
    seed: int


# Domain tags, so that seeds drawn for different purposes never coincide.
_PERMUTATION, _AUGMENTATION, _WORKERS, _SYNTHETIC = range(4)


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative integers (no collisions like seed+epoch)."""
    # The count is appended because SeedSequence treats trailing zero words as absent.
    words = [int(v) for v in values] + [len(values)]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1])) & (2**63 - 1)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ParameterError(f"image size must be positive, got {size}")
    return height, width


def to_model_range(u8: np.ndarray) -> Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [-1, 1] as ``2 * (u8 / 255) - 1`` (spec §11)."""
    # np.require copies only arrays that are read-only (PIL's) or strided (flipped crops).
    tensor = torch.from_numpy(np.require(u8, np.uint8, ["C", "W"])).permute(2, 0, 1)
    return tensor.to(torch.float32).div(255).mul(2).sub(1)


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """All image files under ``root`` (recursive; :data:`crdr.suffixes.TRAINING_SUFFIXES`, any case),
    sorted by their path relative to ``root`` so the order is the same on every machine.

    Linked folders are followed: training sets are often assembled from links to data sets kept
    elsewhere (``crdr compress`` and ``crdr eval`` list only what is inside the folder they got)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"image folder {root} does not exist")
    return find_files(root, TRAINING_SUFFIXES, follow_symlinks=True)


def _load_rgb(path: Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB; grey, palette and RGBA (alpha dropped) converted."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        return np.asarray(rgb)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot read image {path}: {error}") from None


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad like torchvision's ``RandomCrop(pad_if_needed=True, padding_mode='reflect')``:
    a dimension shorter than the crop is padded by the shortfall on **both** sides."""
    h, w = array.shape[:2]
    if w < width:
        array = np.pad(array, ((0, 0), (width - w, width - w), (0, 0)), mode="reflect")
    if h < height:
        array = np.pad(array, ((height - h, height - h), (0, 0), (0, 0)), mode="reflect")
    return array


def _centre_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision ``CenterCrop`` offsets, after reflect padding if the image is too small."""
    array = _pad_to(array, height, width)
    h, w = array.shape[:2]
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return array[top : top + height, left : left + width]


class ImageFolderDataset(Dataset):
    """Every image under a folder, as random training crops (spec §14.1).

    ::

        file (any size, grey/RGB/RGBA/palette)
          -> RGB uint8 -> reflect pad if smaller than crop -> random crop -> flip (p 0.5)
          -> x: (3, crop, crop) float32 in [-1, 1]

    ``augment=False`` takes the centre crop and never flips (deterministic). ``crop=None`` returns
    whole images (no crop, no padding; flip still applies if ``augment``).

    Items: ``dataset[i]`` draws the crop and flip from torch's global RNG (like torchvision);
    ``dataset[SampleKey(i, seed)]`` (what :class:`ResumableSampler` yields) draws them from a
    generator seeded with ``seed``, so the result depends only on the key.

    Unreadable files: the scan only looks at file names (1.1 M OpenImages headers would take long
    to open); a file that cannot be decoded raises :class:`ImageError` naming it when loaded. With
    ``verify=True`` every file is opened at scan time and unreadable ones are skipped with a warning.

    ``exclude``: a folder whose images are held out (the validation folder when it lies inside the
    training root, so validation never scores images the model was trained on).
    """

    accepts_sample_keys = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        crop: int | Sequence[int] | None = 256,
        augment: bool = True,
        verify: bool = False,
        exclude: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.crop = None if crop is None else _pair(crop)
        self.augment = augment
        paths = find_images(self.root)
        if exclude is not None:
            held_out = Path(exclude).resolve()
            paths = [path for path in paths if not path.resolve().is_relative_to(held_out)]
        if verify:
            paths = [path for path in paths if _readable(path)]
        if not paths:
            raise ImageError(f"no images under {self.root} (looked for {', '.join(sorted(TRAINING_SUFFIXES))})")
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | SampleKey) -> Tensor:
        if isinstance(key, tuple):
            index, seed = key
            generator: torch.Generator | None = torch.Generator().manual_seed(int(seed))
        else:
            index, generator = int(key), None
        array = _load_rgb(self.paths[index])
        if self.crop is not None:
            height, width = self.crop
            if self.augment:
                array = _pad_to(array, height, width)
                h, w = array.shape[:2]
                if (h, w) != (height, width):  # torchvision draws nothing for an exact fit
                    top = int(torch.randint(0, h - height + 1, (1,), generator=generator))
                    left = int(torch.randint(0, w - width + 1, (1,), generator=generator))
                    array = array[top : top + height, left : left + width]
            else:
                array = _centre_crop(array, height, width)
        if self.augment and float(torch.rand(1, generator=generator)) < 0.5:
            array = array[:, ::-1]
        return to_model_range(array)


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception as error:  # noqa: BLE001 - PIL raises many kinds for corrupt files
        warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=3)
        return False


class SyntheticImageDataset(Dataset):
    """``n`` smooth, colourful random images, fixed by ``(seed, index)`` (tests and smoke runs).

    Each image is a bicubically upsampled random 4x4 colour grid plus a random sinusoidal pattern and
    one hard-edged disc (so there are edges to code), quantised to 8 bits like a real image::

        index -> (3, H, W) float32 in [-1, 1], H, W = size

    Accepts ``int`` or :class:`SampleKey` items (the augmentation seed is ignored).
    """

    accepts_sample_keys = True

    def __init__(self, n: int, size: int | Sequence[int] = 64, seed: int = 0) -> None:
        if n < 1:
            raise ParameterError(f"synthetic dataset size must be positive, got {n}")
        self.n = n
        self.size = _pair(size)
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | SampleKey) -> Tensor:
        index = int(key[0]) if isinstance(key, tuple) else int(key)
        if not 0 <= index < self.n:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(_mix(_SYNTHETIC, self.seed, index))
        height, width = self.size
        grid = torch.rand(1, 3, 4, 4, generator=generator)
        image = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0]
        rows = torch.linspace(0, 1, height).view(height, 1)
        cols = torch.linspace(0, 1, width).view(1, width)
        frequency, angle, phase = torch.rand(3, generator=generator).tolist()
        direction = rows * np.cos(6.283 * angle) + cols * np.sin(6.283 * angle)
        waves = torch.sin(6.283 * (1 + 4 * frequency) * direction + 6.283 * phase)
        image = image + 0.15 * waves * torch.rand(3, 1, 1, generator=generator)
        centre_y, centre_x, radius = torch.rand(3, generator=generator).tolist()
        disc = (rows - centre_y) ** 2 + (cols - centre_x) ** 2 < (0.1 + 0.25 * radius) ** 2
        colour = torch.rand(3, 1, 1, generator=generator)
        image = torch.where(disc, colour, image)
        u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return u8.to(torch.float32).div(255).mul(2).sub(1)


class ResumableSampler(Sampler[SampleKey]):
    """Shuffled, DDP-sharded, resumable order: yields :class:`SampleKey` items.

    Epoch ``e``: ``perm = randperm(n)`` from a generator seeded by ``(seed, e)``; the tail that does
    not divide evenly among ranks is dropped (every rank gets ``n // world_size`` samples); rank
    ``r`` takes ``perm[r::world_size]`` of the rest, as ``DistributedSampler(drop_last=True)``.
    ``set_epoch(e, skip=k)`` starts the epoch after this rank's first ``k`` samples. Each sample's
    augmentation seed depends only on ``(seed, e, index)``.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ParameterError(f"rank {rank} is outside 0..{world_size - 1}")
        if length < world_size:
            raise ParameterError(f"{length} samples cannot be shared among {world_size} ranks")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.samples_per_epoch = length // world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch to iterate and how many of this rank's samples to leave out at its start."""
        if epoch < 0 or not 0 <= skip <= self.samples_per_epoch:
            raise ParameterError(
                f"epoch {epoch} / skip {skip} invalid (skip must be in 0..{self.samples_per_epoch})"
            )
        self.epoch = epoch
        self.skip = skip

    def locate(self, step: int, batch_size: int) -> tuple[int, int]:
        """``(epoch, skip)`` that continues after ``step`` finished batches of ``batch_size``
        (full batches only, as the loader drops the last partial one)."""
        batches = self.samples_per_epoch // batch_size
        if batches < 1:
            raise ParameterError(
                f"batch size {batch_size} exceeds the {self.samples_per_epoch} samples of an epoch"
            )
        return step // batches, (step % batches) * batch_size

    def indices(self, epoch: int) -> list[int]:
        """This rank's full index order of ``epoch`` (before skipping)."""
        generator = torch.Generator().manual_seed(_mix(_PERMUTATION, self.seed, epoch))
        permutation = torch.randperm(self.length, generator=generator)
        used = self.samples_per_epoch * self.world_size
        return permutation[self.rank : used : self.world_size].tolist()

    def __iter__(self):
        epoch = self.epoch
        for index in self.indices(epoch)[self.skip :]:
            yield SampleKey(index, _mix(_AUGMENTATION, self.seed, epoch, index))

    def __len__(self) -> int:
        return self.samples_per_epoch - self.skip


class _IndexOnly(Dataset):
    """Adapter for datasets that take plain integer indices: drops the augmentation seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey):
        return self.dataset[key[0]]


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group and `kill` by name reaches workers too; a worker that
    # died of it makes the main process raise while it writes its final checkpoint. Workers leave
    # SIGINT/SIGTERM to the main process, which stops them when it shuts the loader down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # torch seeds each worker with base_seed + worker_id, base_seed coming from the loader's seeded
    # generator; derive Python's and NumPy's seeds from it so any other randomness is reproducible.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    seed: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """DataLoader over ``dataset`` with a :class:`ResumableSampler`, ``drop_last=True``.

    With ``distributed=True`` and an initialised process group, ``rank`` and ``world_size`` come from
    ``torch.distributed``; otherwise the given values are used. Call
    ``loader.sampler.set_epoch(epoch, skip)`` before iterating each epoch (``skip`` = this rank's
    samples already consumed; ``loader.sampler.locate(step, batch_size)`` computes both). Workers are
    not persistent, so each epoch's iterator sees the sampler state set just before it.
    """
    if batch_size < 1 or workers < 0:
        raise ParameterError(f"invalid batch size {batch_size} or worker count {workers}")
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        world_size = torch.distributed.get_world_size()
    sampler = ResumableSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)  # type: ignore[arg-type]
    if sampler.samples_per_epoch < batch_size:
        # With drop_last an epoch would be empty and a step-counting loop would never advance.
        raise ParameterError(
            f"batch size {batch_size} exceeds the {sampler.samples_per_epoch} samples per rank and epoch"
        )
    if not getattr(dataset, "accepts_sample_keys", False):
        dataset = _IndexOnly(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(_mix(_WORKERS, seed, rank)),
        persistent_workers=False,
    )


def validation_images(
    root: str | os.PathLike[str], n: int, size: int | Sequence[int]
) -> Tensor:
    """The first ``n`` images under ``root`` (sorted as :func:`find_images`), centre-cropped to ``size``
    (reflect-padded first if smaller). Returns ``(min(n, available), 3, H, W)`` float32 in [-1, 1]."""
    if n < 1:
        raise ParameterError(f"number of validation images must be positive, got {n}")
    height, width = _pair(size)
    paths = find_images(root)[:n]
    if not paths:
        raise ImageError(f"no images under {root} (looked for {', '.join(sorted(TRAINING_SUFFIXES))})")
    return torch.stack([to_model_range(_centre_crop(_load_rgb(p), height, width)) for p in paths])

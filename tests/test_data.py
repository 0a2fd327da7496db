"""Training data: folder scan, crops, value range, synthetic images and the resumable sampler."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from crdr.data import (
    ImageFolderDataset,
    ResumableSampler,
    SampleKey,
    SyntheticImageDataset,
    find_images,
    make_loader,
    to_model_range,
    validation_images,
)
from crdr.errors import ImageError, ParameterError


def write_image(path, width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(path)
    return array


def test_scan_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ["b/z.PNG", "a.jpg", "b/a.WebP", "c.JPEG", "notes.txt", "d.gif"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.jpg", "b/a.WebP", "b/z.PNG", "c.JPEG"]


def test_empty_or_missing_folder_raises_image_error(tmp_path):
    with pytest.raises(ImageError):
        ImageFolderDataset(tmp_path)
    with pytest.raises(ImageError):
        ImageFolderDataset(tmp_path / "absent")


def test_small_image_is_reflect_padded_to_the_crop_size(tmp_path):
    array = write_image(tmp_path / "small.png", width=20, height=12)
    dataset = ImageFolderDataset(tmp_path, crop=16, augment=False)
    x = dataset[0]
    assert x.shape == (3, 16, 16)
    # Height 12 -> padded by 4 on both sides by reflection (20 rows), centre crop rows 2..17:
    # the first output row is padded row 2 = reflection of original row 2.
    expected_first_row = to_model_range(array[2:3, 2:18])
    assert torch.equal(x[:, :1], expected_first_row)


def test_random_crop_and_flip_match_torchvision_with_the_same_seed(tmp_path):
    write_image(tmp_path / "img.png", width=20, height=12)
    reference = transforms.Compose([
        transforms.RandomCrop(16, pad_if_needed=True, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(0.5),
        transforms.ToTensor(),
        transforms.Normalize(0.5, 0.5),
    ])
    dataset = ImageFolderDataset(tmp_path, crop=16)
    outputs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        ours = dataset[0]
        torch.manual_seed(seed)
        theirs = reference(Image.open(tmp_path / "img.png").convert("RGB"))
        assert torch.equal(ours, theirs)
        outputs.add(ours.sum().item())
    assert len(outputs) > 1  # the seeds gave different crops/flips


def test_conversion_is_bit_identical_to_totensor_normalize():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ours = to_model_range(u8)
    theirs = (torch.from_numpy(u8).permute(2, 0, 1).float().div(255) - 0.5) / 0.5
    assert torch.equal(ours, theirs)
    assert ours.dtype == torch.float32 and ours.min() == -1 and ours.max() == 1


def test_outputs_lie_in_minus_one_to_one(tmp_path):
    write_image(tmp_path / "a.png", 40, 40)
    x = ImageFolderDataset(tmp_path, crop=32)[0]
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_grey_and_rgba_images_become_three_channels(tmp_path):
    grey = write_image(tmp_path / "grey.png", 16, 16, mode="L")
    write_image(tmp_path / "rgba.png", 16, 16, mode="RGBA")
    dataset = ImageFolderDataset(tmp_path, crop=16, augment=False)
    x_grey, x_rgba = dataset[0], dataset[1]
    assert x_grey.shape == x_rgba.shape == (3, 16, 16)
    assert torch.equal(x_grey[0], x_grey[2])
    assert torch.equal(x_grey[1], to_model_range(grey[..., :1])[0])


def test_unreadable_image_raises_image_error_naming_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    dataset = ImageFolderDataset(tmp_path)
    with pytest.raises(ImageError, match="broken.jpg"):
        dataset[0]


def test_verify_skips_unreadable_images_with_a_warning(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    write_image(tmp_path / "good.png", 16, 16)
    with pytest.warns(UserWarning, match="broken.jpg"):
        dataset = ImageFolderDataset(tmp_path, crop=16, verify=True)
    assert [p.name for p in dataset.paths] == ["good.png"]


def test_exclude_holds_a_sub_folder_out_of_the_training_set(tmp_path):
    write_image(tmp_path / "train" / "a.png", 16, 16)
    write_image(tmp_path / "held" / "b.png", 16, 16)
    write_image(tmp_path / "held-not" / "c.png", 16, 16)
    dataset = ImageFolderDataset(tmp_path, crop=16, exclude=tmp_path / "held")
    assert [p.name for p in dataset.paths] == ["c.png", "a.png"]


def test_training_never_sees_the_validation_folder(tmp_path):
    import dataclasses

    from crdr.train.config import train_preset
    from crdr.train.loop import make_datasets

    write_image(tmp_path / "train" / "a.png", 64, 64)
    write_image(tmp_path / "val" / "b.png", 64, 64)
    config = dataclasses.replace(train_preset("tiny-stage1"), data_root=str(tmp_path),
                                 validation_root=str(tmp_path / "val"), crop=64, validation_images=1,
                                 validation_crop=64, synthetic_images=0)
    dataset, images = make_datasets(config)
    assert [p.name for p in dataset.paths] == ["a.png"]
    assert images.shape == (1, 3, 64, 64)


def test_sample_key_fixes_the_crop_and_flip(tmp_path):
    write_image(tmp_path / "a.png", 64, 48)
    dataset = ImageFolderDataset(tmp_path, crop=16)
    assert torch.equal(dataset[SampleKey(0, 123)], dataset[SampleKey(0, 123)])
    crops = {dataset[SampleKey(0, seed)].sum().item() for seed in range(8)}
    assert len(crops) > 1


def test_synthetic_images_are_deterministic_colourful_and_in_range():
    a = SyntheticImageDataset(4, size=(24, 32), seed=1)
    b = SyntheticImageDataset(4, size=(24, 32), seed=1)
    x = a[2]
    assert x.shape == (3, 24, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, b[SampleKey(2, 99)])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(x, SyntheticImageDataset(4, size=(24, 32), seed=2)[2])
    assert x.std(dim=(1, 2)).min() > 0.02  # every channel varies
    assert not torch.equal(x[0], x[1])  # colour, not grey


def test_sampler_order_is_reproducible_and_changes_with_epoch():
    first, second = ResumableSampler(50, seed=7), ResumableSampler(50, seed=7)
    assert list(first) == list(second)
    assert sorted(key.index for key in first) == list(range(50))
    second.set_epoch(1)
    assert [k.index for k in first] != [k.index for k in second]
    assert [k.index for k in first] != [k.index for k in ResumableSampler(50, seed=8)]


def test_skipping_k_samples_equals_dropping_the_first_k():
    sampler = ResumableSampler(30, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip=11)
    assert list(sampler) == full[11:]
    assert len(sampler) == 19


def test_ddp_shards_are_disjoint_and_equal_sized():
    shards = []
    for rank in range(3):
        sampler = ResumableSampler(10, seed=5, rank=rank, world_size=3)
        sampler.set_epoch(4)
        shards.append([k.index for k in sampler])
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(set().union(*map(set, shards))) == 9
    assert set(shards[0]) & set(shards[1]) == set()


def test_locate_gives_epoch_and_samples_to_skip():
    sampler = ResumableSampler(10, seed=0)  # batch 3 -> 3 batches per epoch
    assert sampler.locate(0, 3) == (0, 0)
    assert sampler.locate(4, 3) == (1, 3)
    with pytest.raises(ParameterError):
        sampler.locate(0, 11)


def test_resumed_loader_continues_with_the_same_batches(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", 24, 20, seed=i)
    dataset = ImageFolderDataset(tmp_path, crop=16)
    loader = make_loader(dataset, batch_size=2, workers=0, seed=11)
    loader.sampler.set_epoch(1)
    full = list(loader)
    assert len(full) == 3
    resumed = make_loader(dataset, batch_size=2, workers=0, seed=11)
    resumed.sampler.set_epoch(*resumed.sampler.locate(3 + 1, 2))
    rest = list(resumed)
    assert len(rest) == 2
    assert all(torch.equal(a, b) for a, b in zip(rest, full[1:]))


def test_loader_batches_do_not_depend_on_worker_count():
    dataset = SyntheticImageDataset(6, size=16, seed=0)
    batches = []
    for workers in (0, 2):
        loader = make_loader(dataset, batch_size=2, workers=workers, seed=1)
        batches.append(list(loader))
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_loader_accepts_datasets_that_take_plain_indices():
    dataset = torch.utils.data.TensorDataset(torch.arange(8.0))
    loader = make_loader(dataset, batch_size=3, workers=0, seed=0)
    values = torch.cat([batch[0] for batch in loader])
    assert len(values) == 6 and len(set(values.tolist())) == 6


def test_validation_images_are_the_first_n_centre_crops(tmp_path):
    arrays = [write_image(tmp_path / f"{i}.png", 20, 18, seed=i) for i in range(3)]
    x = validation_images(tmp_path, 2, 8)
    assert x.shape == (2, 3, 8, 8)
    assert torch.equal(x[1], to_model_range(arrays[1][5:13, 6:14]))
    assert validation_images(tmp_path, 10, 8).shape[0] == 3


def test_loader_with_fewer_samples_than_a_batch_raises_parameter_error():
    with pytest.raises(ParameterError):
        make_loader(SyntheticImageDataset(3, size=16), batch_size=4, workers=0, seed=0)

"""Tests of per-image metrics, HiFiC patches and FID/KID: known values, offline behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crdr import metrics
from crdr.errors import CrdrError, ImageError, ParameterError
from crdr.metrics import (
    Lpips,
    MetricUnavailable,
    fid_from_features,
    fid_kid,
    hific_patches,
    kid_from_features,
    ms_ssim,
    psnr,
)


def _random_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _ramp_image(height: int = 64, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (height + width - 2)],
                    axis=-1).astype(np.uint8)


# --- PSNR -------------------------------------------------------------------------------------


def test_psnr_of_images_differing_by_one_everywhere_is_48_13_db():
    a = _ramp_image()
    b = np.where(a < 255, a + 1, a - 1).astype(np.uint8)  # |a − b| = 1 at every sample, MSE = 1
    assert psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert psnr(a, b) == pytest.approx(48.1308, abs=1e-4)


def test_psnr_of_identical_images_is_inf():
    a = _random_image()
    assert psnr(a, a.copy()) == math.inf


def test_psnr_uses_mse_over_all_three_channels():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 3  # MSE = 9 · (1/3) = 3
    assert psnr(a, b) == pytest.approx(20 * math.log10(255) - 10 * math.log10(3.0), abs=1e-9)


def test_psnr_of_float_tensor_matches_its_8_bit_rounding():
    a = _random_image(16, 16, seed=1)
    b = _random_image(16, 16, seed=2)
    tensor_b = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255.0 + 0.001  # rounds back to b
    assert psnr(a, tensor_b) == pytest.approx(psnr(a, b), abs=1e-12)


def test_psnr_rejects_mismatched_sizes_and_float_arrays():
    with pytest.raises(ImageError):
        psnr(_random_image(8, 8), _random_image(8, 9))
    with pytest.raises(ImageError):
        psnr(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))


# --- MS-SSIM ----------------------------------------------------------------------------------


def test_ms_ssim_is_nan_below_161_pixels_and_one_for_identical_images_above():
    assert math.isnan(ms_ssim(_random_image(160, 200), _random_image(160, 200)))
    image = _random_image(161, 161)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(image.astype(int) + 40, 0, 255).astype(np.uint8)
    assert ms_ssim(image, noisy) < 0.999


# --- Perceptual metrics -----------------------------------------------------------------------


def test_st_lpips_of_identical_images_is_zero_and_positive_for_different_ones():
    st_lpips = metrics.perceptual_metric("st-lpips")
    a = _random_image()
    assert st_lpips(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    assert st_lpips(a, _ramp_image()) > 0.05


def test_st_lpips_object_is_built_once_and_reused():
    first = metrics.perceptual_metric("st-lpips")
    first(_ramp_image(), _ramp_image())
    assert metrics.perceptual_metric("st-lpips") is first
    assert metrics.perceptual_metric("st-lpips").network is first.network


def test_lpips_without_backbone_weights_raises_metric_unavailable_naming_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="TORCH_HOME") as error:
        Lpips()
    assert "\n" not in str(error.value)
    assert isinstance(error.value, CrdrError)


def test_lpips_loads_a_local_alexnet_backbone_without_downloading(tmp_path):
    # Random AlexNet conv weights in torchvision's key layout stand in for the real checkpoint.
    generator = torch.Generator().manual_seed(0)
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}
    state = {}
    for name, shape in shapes.items():
        state[name + ".weight"] = torch.randn(shape, generator=generator) * 0.05
        state[name + ".bias"] = torch.zeros(shape[0])
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    lpips_metric = Lpips(backbone_path=path)
    a = _random_image()
    assert lpips_metric(a, a.copy()) == pytest.approx(0.0, abs=1e-7)
    assert lpips_metric(a, _ramp_image()) > 0.0


def test_unknown_perceptual_metric_is_a_parameter_error():
    with pytest.raises(ParameterError):
        metrics.perceptual_metric("ssim-but-wrong")


def test_available_metrics_lists_every_metric_with_a_reason_when_unavailable():
    statuses = {status.name: status for status in metrics.available_metrics()}
    expected = {"psnr", "ms-ssim", "st-lpips", "lpips", "dists", "fid[inception-v3]", "fid[alexnet-stlpips]"}
    assert expected <= set(statuses)
    assert statuses["psnr"].available and statuses["st-lpips"].available
    for status in statuses.values():
        assert status.available == (status.reason == "")
        assert "\n" not in status.reason


def test_inception_features_without_weights_raise_metric_unavailable_naming_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    with pytest.raises(MetricUnavailable, match="torch-fidelity|CRDR_INCEPTION_WEIGHTS"):
        metrics.get_feature_extractor("inception-v3")


# --- HiFiC patches ----------------------------------------------------------------------------


def test_hific_patches_of_768x512_image_are_6_grid_plus_2_shifted():
    image = _random_image(512, 768)
    patches = hific_patches(image)
    assert patches.shape == (8, 256, 256, 3)
    np.testing.assert_array_equal(patches[0], image[:256, :256])
    np.testing.assert_array_equal(patches[5], image[256:512, 512:768])
    np.testing.assert_array_equal(patches[6], image[128:384, 128:384])
    np.testing.assert_array_equal(patches[7], image[128:384, 384:640])


def test_hific_patches_of_image_smaller_than_a_patch_is_empty():
    assert hific_patches(_random_image(100, 300)).shape == (0, 256, 256, 3)


# --- FID / KID --------------------------------------------------------------------------------


def test_fid_of_identical_feature_sets_is_zero():
    features = np.random.default_rng(0).normal(size=(200, 16))
    assert fid_from_features(features, features.copy()) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_mean_shifted_features_is_squared_shift():
    features = np.random.default_rng(1).normal(size=(300, 8))
    shift = np.arange(8) * 0.1
    assert fid_from_features(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_kid_is_near_zero_for_same_distribution_and_larger_for_shifted():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    same, _ = kid_from_features(real, fake, subsets=10, subset_size=100)
    shifted, _ = kid_from_features(real, fake + 1.0, subsets=10, subset_size=100)
    assert abs(same) < 0.05
    assert shifted > 10 * abs(same)


def test_kid_of_two_points_each_is_the_hand_computed_mmd():
    # k(x, y) = (xy + 1)³ for D = 1; both sets are smaller than the subset size, so every
    # subset is the whole set: (k(0,1)·2 + k(1,2)·2) / 2 − 2·mean(1, 1, 8, 27) = 28 − 18.5.
    kid, kid_std = kid_from_features(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), subsets=3)
    assert kid == pytest.approx(9.5, rel=1e-12) and kid_std == pytest.approx(0.0, abs=1e-12)


def test_kid_of_sets_smaller_than_the_subset_size_does_not_depend_on_the_seed():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    assert kid_from_features(real, fake, subsets=4, seed=0)[0] == pytest.approx(
        kid_from_features(real, fake, subsets=4, seed=5)[0], rel=1e-12)


def test_fid_of_one_dimensional_features_is_mean_and_deviation_gap():
    # Means 1 and 2, variances 2 and 8: (1 − 2)² + (√2 − √8)² = 1 + 2.
    assert fid_from_features(np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])) == pytest.approx(3.0, rel=1e-12)


def test_fid_kid_with_offline_extractor_is_labelled_alexnet_stlpips():
    patches = hific_patches(_random_image(128, 128), patch=64)  # 4 + 1 patches
    result = fid_kid(patches, patches[::-1].copy(), "alexnet-stlpips", kid_subsets=5)
    assert result.extractor == "alexnet-stlpips"
    assert result.fid_label == "FID[alexnet-stlpips]"
    assert (result.num_real, result.num_fake) == (5, 5)
    assert result.fid == pytest.approx(0.0, abs=1e-4)


def test_fid_rejects_a_single_feature_vector():
    with pytest.raises(ParameterError):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))

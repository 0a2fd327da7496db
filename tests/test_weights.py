"""Weight loading: key table, architecture inference, strictness, safe unpickling, export format."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch

from crdr.config import TINY
from crdr.errors import WeightsError
from crdr.models.crdr import CRDR
from crdr.weights import (
    CONFIG_METADATA_KEY, crdr_to_official_key, infer_config, load_model, load_state, model_id,
    official_to_crdr_key, save_weights,
)


def test_key_table_maps_legacy_bottleneck_names_and_module_prefix():
    assert official_to_crdr_key("entropy_model_z._matrix3") == "entropy_model_z.matrices.3"
    assert official_to_crdr_key("entropy_model_z._bias0") == "entropy_model_z.biases.0"
    assert official_to_crdr_key("entropy_model_z._factor2") == "entropy_model_z.factors.2"
    assert official_to_crdr_key("module.encoder.conv1.weight") == "encoder.conv1.weight"
    assert crdr_to_official_key("entropy_model_z.matrices.3") == "entropy_model_z._matrix3"


def test_official_checkpoint_architecture_is_inferred(tiny_model):
    assert tiny_model.config == TINY


def test_missing_keys_are_named(tmp_path, vectors_dir):
    checkpoint = torch.load(vectors_dir / "official_tiny.pth.tar", weights_only=True)
    del checkpoint["comp_model"]["decoder.mlp.2.weight"]
    path = tmp_path / "broken.pth.tar"
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match="decoder.mlp.2.weight"):
        load_model(path, config=TINY)


def test_unexpected_keys_and_wrong_shapes_are_refused(tmp_path, vectors_dir):
    checkpoint = torch.load(vectors_dir / "official_tiny.pth.tar", weights_only=True)
    state = checkpoint["comp_model"]
    state["encoder.extra.weight"] = torch.zeros(1)
    torch.save(checkpoint, tmp_path / "extra.pth.tar")
    with pytest.raises(WeightsError, match="unexpected keys: encoder.extra.weight"):
        load_model(tmp_path / "extra.pth.tar", config=TINY)
    del state["encoder.extra.weight"]
    state["encoder.conv1.bias"] = torch.zeros(17)
    torch.save(checkpoint, tmp_path / "shape.pth.tar")
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_model(tmp_path / "shape.pth.tar", config=TINY)


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as handle:
        pickle.dump({"comp_model": _Exploit()}, handle)
    with pytest.raises(WeightsError):
        load_model(path)


def test_garbage_and_missing_files_give_weights_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.pth.tar")


def test_fp16_export_round_trips_with_config_and_sha256(tmp_path, tiny_model):
    sidecar = save_weights(tiny_model, tmp_path / "tiny.safetensors", extra={"command": "test"})
    assert len(sidecar["sha256"]) == 64 and sidecar["command"] == "test"
    loaded = load_model(tmp_path / "tiny.safetensors")
    assert loaded.config == tiny_model.config
    for (key, a), b in zip(tiny_model.state_dict().items(), loaded.state_dict().values()):
        if a.is_floating_point() and a.numel():
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-3), key
    assert loaded.model_id != tiny_model.model_id  # fp16 rounding changes the weights, so the id


def test_saved_weights_get_the_umask_permissions_not_owner_only(tmp_path, tiny_model):
    previous = os.umask(0o022)
    try:
        save_weights(tiny_model, tmp_path / "shared.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.safetensors").stat().st_mode) == 0o644


def test_model_id_depends_on_weights_only():
    torch.manual_seed(0)
    a = CRDR(TINY)
    b = CRDR(TINY)
    b.load_state_dict(a.state_dict())
    assert model_id(a) == model_id(b)
    with torch.no_grad():
        b.decoder.conv4.bias.add_(1e-3)
    assert model_id(a) != model_id(b)


def test_infer_config_rejects_non_crdr_state():
    with pytest.raises(WeightsError):
        infer_config({"foo": torch.zeros(1)})


def test_fp16_export_keeps_the_lower_bounds_exact(tmp_path, tiny_model):
    from safetensors.torch import load_file

    path = tmp_path / "m.safetensors"
    save_weights(tiny_model, path)
    stored = load_file(str(path))
    assert stored["entropy_model_y.likelihood_lower_bound.bound"].dtype == torch.float32
    assert float(stored["entropy_model_y.likelihood_lower_bound.bound"]) == pytest.approx(1e-9)
    assert float(stored["entropy_model_y.scale_bound"]) == pytest.approx(0.11, abs=1e-7)
    assert stored["decoder.mlp.2.weight"].dtype == torch.float16


def test_a_file_with_zeroed_bounds_loads_with_the_configs_bounds(tmp_path, tiny_model):
    # Exports written before the bounds were kept in fp32 hold 0 for the 1e-9 likelihood bound.
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m.safetensors"
    save_weights(tiny_model, path)
    stored = load_file(str(path))
    for key in stored:
        if key.endswith("likelihood_lower_bound.bound"):
            stored[key] = torch.zeros(1, dtype=torch.float16)
    stored["entropy_model_y.lower_bound_scale.bound"] = torch.tensor([0.11], dtype=torch.float16)
    save_file(stored, str(path), metadata={CONFIG_METADATA_KEY: tiny_model.config.to_json()})
    model = load_model(path)
    bounds = {k: float(v) for k, v in model.state_dict().items() if k.endswith("bound")}
    assert bounds["entropy_model_y.likelihood_lower_bound.bound"] == pytest.approx(1e-9)
    assert bounds["entropy_model_z.likelihood_lower_bound.bound"] == pytest.approx(1e-9)
    assert bounds["entropy_model_y.lower_bound_scale.bound"] == pytest.approx(0.11, abs=1e-8)
    # A value far outside every bin still costs a finite number of bits.
    far = torch.full((1, model.config.y_channels, 1, 1), 1e4)
    likelihood = model.entropy_model_y.likelihood(far, torch.ones_like(far), torch.zeros_like(far))
    assert torch.isfinite(torch.log(likelihood)).all()


def test_a_model_built_for_loading_loads_to_the_same_state_as_a_randomly_initialised_one(tmp_path):
    torch.manual_seed(5)
    source = CRDR(TINY).eval()
    state = {k: v for k, v in source.state_dict().items()}
    empty = CRDR.for_loading(TINY)
    assert not any(t.is_meta for t in [*empty.parameters(), *empty.buffers()])
    random = CRDR(TINY)
    load_state(empty, state)
    load_state(random, state)
    loaded, expected = empty.state_dict(), random.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)  # constants and tables too
    assert model_id(empty) == model_id(source)

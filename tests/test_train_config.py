"""Training configuration: presets, derived weights, --set overrides, JSON round trip."""

import dataclasses
import json

import pytest

from crdr.errors import ParameterError
from crdr.train.command import main
from crdr.train.config import PRESETS, TrainConfig, apply_overrides, load_config, parse_overrides, train_preset


def test_every_preset_is_valid_and_named_after_itself():
    for name, config in PRESETS.items():
        assert config.name == name
        config.validate()
        assert config.model_config().variable_rate == (config.stage >= 2)
        assert config.model_config().beta_conditioned == (config.stage == 3)


def test_paper_presets_follow_the_authors_recipe():
    stage1, stage2, stage3 = (train_preset(f"stage{i}") for i in (1, 2, 3))
    assert (stage1.lambda_a, stage1.target_rates, stage1.lambda_b) == ((0.05,), (1.5,), 2**-6)
    assert stage2.lambda_a == (3.6, 1.8, 0.8, 0.4, 0.1)
    assert stage2.target_rates == (0.08, 0.16, 0.36, 0.72, 1.2)
    assert stage3.lambda_a == (3.4, 1.3, 0.4, 0.12, 0.05) and set(stage3.target_rates) == {0.0}
    assert (stage1.steps, stage2.steps, stage3.steps) == (1_000_000, 1_000_000, 3_000_000)
    assert (stage1.lr_milestones, stage3.lr_milestones) == ((800_000,), (2_400_000,))
    assert stage3.perceptual_weight == 0.390625 and stage3.adversarial_weight == 0.000390625
    assert stage3.beta_weighted and not stage2.beta_weighted
    assert stage3.gan_loss == "hrrgan" and stage3.discriminator == "independent"
    assert stage2.adversarial_weight == 0 and stage1.mse_weight == 150
    assert all(train_preset(f"stage{i}").perceptual == "lpips-alex" for i in (1, 2, 3))
    assert all(train_preset(f"small-stage{i}").perceptual == "stlpips-alex" for i in (1, 2, 3))


def test_set_converts_each_field_to_its_type():
    config = apply_overrides(
        train_preset("tiny-stage2"),
        ["steps=7", "lr=2e-4", "bf16=yes", "lambda_a=1,2,3,4,5", "frozen=encoder.,decoder.", "name=x",
         "lr_milestones=", "validation_q=0,4"],
    )
    assert config.steps == 7 and config.lr == 2e-4 and config.bf16 is True and config.name == "x"
    assert config.lambda_a == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert config.frozen == ("encoder.", "decoder.") and config.lr_milestones == ()
    assert config.validation_q == (0.0, 4.0)


def test_unknown_set_field_fails_with_its_name():
    with pytest.raises(ParameterError, match="learning_rate"):
        parse_overrides(["learning_rate=1"])


def test_malformed_set_values_fail():
    for item in ("steps=many", "bf16=maybe", "lr", "lambda_a=1,x"):
        with pytest.raises(ParameterError):
            parse_overrides([item])


def test_inconsistent_values_fail_validation():
    with pytest.raises(ParameterError, match="lambda_a"):
        apply_overrides(train_preset("tiny-stage2"), ["lambda_a=1,2"])
    with pytest.raises(ParameterError, match="multiple of 64"):
        apply_overrides(train_preset("tiny-stage1"), ["crop=100"])
    with pytest.raises(ParameterError, match="gan_loss"):
        apply_overrides(train_preset("tiny-stage3"), ["gan_loss=wgan"])
    with pytest.raises(ParameterError, match="beta_weighted"):
        apply_overrides(train_preset("tiny-stage2"), ["beta_weighted=true"])


def test_config_survives_a_json_round_trip(tmp_path):
    config = train_preset("stage3")
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": config.to_dict()}))
    assert load_config(str(path)) == config
    with pytest.raises(ParameterError, match="bogus"):
        TrainConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_cli_unknown_field_exits_non_zero_with_one_line(capsys):
    assert main(["train", "tiny-stage1", "--set", "nope=1"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "nope" in error


def test_cli_unknown_preset_fails(capsys):
    assert main(["train", "stage9"]) == 1
    assert "stage9" in capsys.readouterr().err


def test_stage_changes_are_applied_together():
    # Changing the stage and the per-level lists in one --set group must validate as a whole.
    config = apply_overrides(
        train_preset("tiny-stage1"), ["stage=2", "lambda_a=1,1,1,1,1", "target_rates=0,0,0,0,0"]
    )
    assert dataclasses.replace(config).stage == 2


def test_the_crdr_cli_has_the_train_and_export_commands(capsys):
    from crdr.cli import main as cli_main

    assert cli_main(["train", "tiny-stage1", "--set", "nope=1"]) == 1
    assert "nope" in capsys.readouterr().err
    assert cli_main(["export", "/nonexistent-run", "-o", "/tmp/never.safetensors"]) == 1


def test_the_stand_alone_command_reports_errors_as_the_crdr_cli_does(tmp_path, capsys, monkeypatch):
    from crdr.cli import main as cli_main
    from crdr.train import export

    argv = ["export", str(tmp_path / "missing-run"), "-o", str(tmp_path / "never.safetensors")]
    assert main(argv) == 1
    alone = capsys.readouterr().err
    assert cli_main(argv) == 1
    assert alone == capsys.readouterr().err == f"crdr: error: run directory {tmp_path / 'missing-run'} does not exist\n"

    def unreadable(*args, **kwargs):  # an I/O error is one line too, not a traceback
        raise PermissionError(13, "Permission denied", str(tmp_path / "run"))

    monkeypatch.setattr(export, "export", unreadable)
    assert main(argv) == 1
    assert capsys.readouterr().err == f"crdr: error: Permission denied: {tmp_path / 'run'}\n"


def test_small_stage3_has_its_own_rate_weights_and_the_paper_keeps_its_own():
    from crdr.train.config import _STAGE3_LAMBDA_A, _SMALL_STAGE3_LAMBDA_A

    assert train_preset("stage3").lambda_a == _STAGE3_LAMBDA_A == (3.4, 1.3, 0.4, 0.12, 0.05)
    assert train_preset("small-stage3").lambda_a == _SMALL_STAGE3_LAMBDA_A
    assert train_preset("small-stage3").lambda_a[-1] < train_preset("stage3").lambda_a[-1]
    assert not train_preset("stage3").channels_last and train_preset("small-stage3").channels_last


def test_a_config_json_from_before_the_hybrid_discriminator_fields_still_loads(tmp_path):
    config = train_preset("tiny-stage3")
    values = config.to_dict()
    for name in ("discriminator_backbone_depth", "discriminator_head_depth", "discriminator_condition_on_level"):
        del values[name]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": values}))
    assert load_config(str(path)) == config


def test_hybrid_discriminator_options_are_set_by_name_and_checked():
    config = apply_overrides(
        train_preset("tiny-stage3"),
        ["discriminator=hybrid", "discriminator_backbone_depth=1", "discriminator_head_depth=3",
         "discriminator_condition_on_level=yes"],
    )
    assert (config.discriminator_backbone_depth, config.discriminator_head_depth) == (1, 3)
    assert config.discriminator_condition_on_level is True
    with pytest.raises(ParameterError, match="discriminator_head_depth"):
        apply_overrides(train_preset("tiny-stage3"), ["discriminator_head_depth=0"])


def test_config_accepts_exactly_the_names_the_builders_accept():
    from crdr.losses import GAN_LOSS_NAMES, PERCEPTUAL_KINDS, gan_loss
    from crdr.models.discriminator import DISCRIMINATOR_KINDS, build_discriminator

    base = train_preset("tiny-stage3")
    for field, names in (("gan_loss", GAN_LOSS_NAMES), ("perceptual", PERCEPTUAL_KINDS),
                         ("discriminator", DISCRIMINATOR_KINDS)):
        for name in names:
            assert getattr(apply_overrides(base, [f"{field}={name}"]), field) == name
        with pytest.raises(ParameterError, match=field):
            apply_overrides(base, [f"{field}=none-of-these"])
    assert [gan_loss(name).name for name in GAN_LOSS_NAMES] == list(GAN_LOSS_NAMES)
    assert all(build_discriminator(kind, levels=1, main_channels=1) is not None for kind in DISCRIMINATOR_KINDS)

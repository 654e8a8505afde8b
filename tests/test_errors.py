"""Validation errors read the same everywhere: the run config, the service's settings and HTTP requests."""

import pytest

from service.cli import main as tamrl
from tamrl.config import load_config
from tamrl.errors import ConfigError, validation_message


def test_a_request_error_names_the_field_without_where_fastapi_found_it():
    errors = [
        {"loc": ("query", "lat"), "msg": "Input should be less than or equal to 90"},
        {"loc": ("body", "bbox", 0), "msg": "Input should be a valid number"},
        {"loc": ("body",), "msg": "Value error, end 2020-04-01 is before start 2020-04-10"},
    ]
    assert validation_message(errors, "request") == (
        "lat: Input should be less than or equal to 90; bbox.0: Input should be a valid number; "
        "request: end 2020-04-01 is before start 2020-04-10"
    )


def test_run_config_errors_name_every_bad_key():
    with pytest.raises(ConfigError) as bad_keys:
        load_config(seeds=0, colour="red")
    assert str(bad_keys.value) == (
        "invalid run config: seeds: Input should be greater than or equal to 1; colour: Extra inputs are not permitted"
    )
    with pytest.raises(ConfigError) as bad_whole:
        load_config(model="xgboost")
    assert str(bad_whole.value) == (
        "invalid run config: config: xgboost chooses its number of rounds on validation sites: set val_fraction > 0"
    )


def test_bad_service_settings_are_one_line(capsys):
    assert tamrl(["serve", "--workers", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tamrl serve: error: invalid settings (options or TAMRL_* variables): workers: Input should be greater than "
        "or equal to 0\n"
    )

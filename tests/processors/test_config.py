from __future__ import annotations

import pytest

from processors import ClustererError, ConfigError, EngineConfig


def test_defaults_are_valid_and_round_trip_through_a_mapping():
    cfg = EngineConfig()
    assert EngineConfig.from_mapping(cfg.to_mapping()) == cfg


def test_a_single_scope_field_is_one_field_not_its_letters():
    assert EngineConfig(scope_fields="domain").scope_fields == ("domain",)  # type: ignore[arg-type]
    assert EngineConfig.from_mapping({"scope_fields": ["domain", "lang"]}).scope_fields == (
        "domain",
        "lang",
    )
    with pytest.raises(ConfigError, match="scope_fields"):
        EngineConfig(scope_fields=("domain", 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scope_fields repeats"):
        EngineConfig(scope_fields=("domain", "domain"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tick_items", 2.5, "tick_items must be an integer, got 2.5"),
        ("tick_items", "1024", "tick_items must be an integer"),
        ("tick_items", True, "tick_items must be an integer"),
        ("tick_items", 0, "tick_items must be at least 1"),
        ("assign_threshold", "0.6", "assign_threshold must be a number, got '0.6'"),
        ("assign_threshold", 1.5, "assign_threshold must be in (0, 1]"),
        ("assign_threshold", 0.0, "assign_threshold must be in (0, 1]"),
        ("half_life_seconds", float("inf"), "half_life_seconds must be finite"),
        ("half_life_seconds", -1.0, "half_life_seconds must be above 0"),
        ("search_threads", -1, "search_threads must be at least 0"),
        ("search_backend", "gpu", "search_backend"),
        ("hdbscan_min_cluster_size", 1, "hdbscan_min_cluster_size must be at least 2"),
        ("retire_weight", 5.0, "retire_weight must be below min_weight"),
        ("reconsolidate_delay_items", -1, "reconsolidate_delay_items must be at least 0"),
        ("extra", [], "extra must be a table"),
    ],
)
def test_bad_values_fail_at_construction_naming_the_field(field, value, message):
    with pytest.raises(ConfigError) as exc:
        EngineConfig(**{field: value})
    assert message in str(exc.value)
    assert isinstance(exc.value, ClustererError) and isinstance(exc.value, ValueError)


def test_numbers_are_normalised():
    cfg = EngineConfig(tick_items=512.0, min_weight=3, tau_seconds=10)  # type: ignore[arg-type]
    assert cfg.tick_items == 512 and type(cfg.tick_items) is int
    assert type(cfg.min_weight) is float and type(cfg.tau_seconds) is float


def test_replace_and_from_mapping_validate_too():
    with pytest.raises(ConfigError, match="tick_items"):
        EngineConfig().replace(tick_items=2.5)
    with pytest.raises(ConfigError, match="unknown engine settings: assign_treshold"):
        EngineConfig.from_mapping({"assign_treshold": 0.5})
    with pytest.raises(ConfigError, match="merge_threshold"):
        EngineConfig.from_mapping({"merge_threshold": "0.3"})

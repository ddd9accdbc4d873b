"""Config precedence, type checking and errors."""

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest
import yaml

from lcgen.config import config_from_dict, config_to_yaml, parse_set, resolve_config
from lcgen.errors import LcgenError


@dataclass
class Inner:
    ratio: float = 0.5
    sizes: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Outer:
    lr: float = 1e-3
    epochs: int = 10
    name: Optional[str] = None
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] = field(default_factory=dict)


def test_precedence_defaults_yaml_flags_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3e-4\nepochs: 20\ninner:\n  ratio: 0.25\n")
    cfg = resolve_config(Outer, config_file=path, flags={"epochs": 30, "name": None, "inner.sizes": [4]},
                         sets=["epochs=40", "inner.ratio=0.75"])
    # YAML's "3e-4" is a string to PyYAML; it must come out a float.
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float)
    assert cfg.epochs == 40  # --set beats the flag, which beat the YAML
    assert cfg.name is None  # a flag left unset (None) does not override
    assert cfg.inner == Inner(ratio=0.75, sizes=[4])


def test_saved_yaml_round_trips_as_config(tmp_path):
    cfg = resolve_config(Outer, sets=["name=run1", "mode=b", "flag=true", "inner.sizes=[8, 16]"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    assert resolve_config(Outer, config_file=path) == cfg


@pytest.mark.parametrize("sets, message", [
    (["epoch=3"], "unknown setting 'epoch'; did you mean 'epochs'?"),
    (["inner.rato=0.1"], "unknown setting 'inner.rato'; did you mean 'inner.ratio'?"),
    (["epochs=many"], "setting 'epochs' = 'many' is not an int"),
    (["lr=fast"], "setting 'lr' = 'fast' is not a float"),
    (["mode=c"], "setting 'mode' = 'c' is not one of 'a', 'b'"),
    (["flag=3"], "setting 'flag' = 3 is not a bool"),
    (["inner.sizes=[1, x]"], "setting 'inner.sizes[1]' = 'x' is not an int"),
    (["epochs"], "--set expects KEY=VALUE"),
    (["name=[1]"], "setting 'name' = [1] is not str or null"),
])
def test_bad_settings_name_key_value_and_type(sets, message):
    with pytest.raises(LcgenError) as err:
        resolve_config(Outer, sets=sets)
    assert message in str(err.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(LcgenError, match="does not exist"):
        resolve_config(Outer, config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(LcgenError, match="not valid YAML"):
        resolve_config(Outer, config_file=bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(LcgenError, match="must hold a mapping"):
        resolve_config(Outer, config_file=listy)


def test_parse_set_nests_and_parses_values():
    assert parse_set(["a.b=1", "a.c=[1, 2]", "d=x", "e=1e-3"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": "1e-3"}


def test_int_accepted_for_float_and_integral_float_for_int():
    assert config_from_dict(Outer, {"epochs": "1e2"}).epochs == 100  # YAML reads 1e2 as a string
    cfg = config_from_dict(Outer, {"lr": 1, "epochs": 5.0})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int)
    with pytest.raises(LcgenError, match="is not an int"):
        config_from_dict(Outer, {"epochs": 5.5})
    assert yaml.safe_load(config_to_yaml(cfg))["lr"] == 1.0


def test_sections_merge_across_layers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extra:\n  depth: 3\n  widths: [1, 2]\ninner:\n  # only comments here\n")
    cfg = resolve_config(Outer, config_file=path, sets=["extra.dropout=0.1", "extra.widths=[4]"])
    assert cfg.extra == {"depth": 3, "widths": [4], "dropout": 0.1}
    assert cfg.inner == Inner()


@dataclass
class Derived:
    width: Optional[int] = None
    double: Optional[int] = None

    def __post_init__(self):
        if self.width is None:
            self.width = self.double // 2 if self.double is not None else 8
        if self.double is None:
            self.double = 2 * self.width
        if self.double != 2 * self.width:
            raise ValueError("inconsistent")


def test_config_from_dict_builds_once_so_derived_fields_follow():
    assert config_from_dict(Derived, {"double": 6}) == Derived(width=3, double=6)
    assert config_from_dict(Derived, {"width": 5}) == Derived(width=5, double=10)

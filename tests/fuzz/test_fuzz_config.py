"""Config files: mutated TOML text, mutated parsed data, PRESENCE_* variables (tests/fuzz/targets.py)."""

from __future__ import annotations

import copy
import datetime
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from presence_server.config import ENV_SECTIONS, Config, parse_config
from tests.fuzz.targets import Refused, feed_config_data, feed_config_file


def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)


# The seed corpus's full config: every section and list the validator knows.
BASE_TOML = (Path(__file__).parent / "corpus" / "config" / "full.toml").read_bytes()
BASE: dict[str, Any] = tomllib.loads(BASE_TOML.decode())

toml_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)) | st.dates()
    | st.sampled_from(["", "redis://x", "http://x", "{from}", "{from.x}", "{from[x]}", "{0}", "{to!z}", "+15550100001",
                       "AC" + "0" * 32, "SK" + "1" * 32, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
)
toml_values = st.recursive(
    toml_scalars.filter(lambda v: v is not None),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _slots(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path in the parsed config."""
    out = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _slots(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _slots(value, (*path, index))
    return out


SLOTS = _slots(BASE)


@st.composite
def mutated_data(draw: st.DrawFn) -> dict[str, Any]:
    """The full config with values retyped, keys removed and unknown keys added."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(SLOTS))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            if not path:
                continue
            action = draw(st.sampled_from(["set", "set", "drop", "add"]))
            if action == "set":
                parent[path[-1]] = draw(toml_values)
            elif action == "drop":
                del parent[path[-1]]
            elif isinstance(parent[path[-1]], dict):
                parent[path[-1]][draw(st.text(max_size=10))] = draw(toml_values)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or retyped this path
            continue
    return data


env_names = st.builds(
    lambda section, key: f"PRESENCE_{section.upper()}_{key.upper()}",
    st.sampled_from([*ENV_SECTIONS, "accounts", "dev", "x"]),
    st.sampled_from(sorted({k for s in ENV_SECTIONS for k in Config.model_fields[s].annotation.model_fields})) | st.text(max_size=8),  # type: ignore[union-attr]
)
environments = st.dictionaries(env_names | st.text(max_size=12), st.text(max_size=20) | st.sampled_from(["1", "true", '"x"', "[1, 2]", "{a = 1}", "nan"]), max_size=3)


@examples(250)
@given(mutated_data(), environments)
@example({**BASE, "accounts": [{**BASE["accounts"][0], "fallback": {"missed_call_template": "{from.x}"}}]}, {})
@example({**BASE, "accounts": [{**BASE["accounts"][0], "fallback": {"missed_call_template": "{from[x]}"}}]}, {})
@example({"server": 5}, {"PRESENCE_SERVER_PORT": "8081"})  # a section that is not a table, and a variable for it
@example({}, {"PRESENCE_SERVER_HOST": "[" * 100_000})  # tomllib recursion in a variable's value
def test_mutated_configs_load_or_are_refused_naming_the_key(data: dict[str, Any], environ: dict[str, str]) -> None:
    feed_config_data(data, environ)


@examples(200)
@given(st.integers(0, len(BASE_TOML)), st.integers(0, 20), st.binary(max_size=12) | st.sampled_from([b"[", b"]", b"=", b'"', b"\n[[accounts]]\n", b"{", b"\\u"]))
def test_mutated_toml_text_loads_or_is_refused(at: int, cut: int, insert: bytes) -> None:
    feed_config_file(BASE_TOML[:at] + insert + BASE_TOML[at + cut :])


@examples(150)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(b"a = " + b"[" * 100_000)  # deeper than tomllib's recursion
@example(b"a = " + b"{b = " * 50_000)
@example(b"\xff\xfe[server]")
def test_raw_files_load_or_are_refused(content: bytes) -> None:
    feed_config_file(content)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_class_shares_are_refused(value: float) -> None:
    # NaN compares false with everything, so "v <= 0" let it through (found by Hypothesis);
    # every number of the config must now be finite, and the error names the share.
    shares = {"urgent": value, "normal": 0.5, "bulk": 0.5}
    outcome = feed_config_data({"messaging": {"class_shares": shares}})
    assert outcome == Refused("ConfigError", "messaging.class_shares.urgent: Input should be a finite number")


def test_the_full_seed_config_loads() -> None:
    assert feed_config_file(BASE_TOML) == "accepted"


@examples(30)
@given(mutated_data())
def test_what_loads_reloads_to_the_same_config(data: dict[str, Any]) -> None:
    # The encoder of a config is model_dump: a config written back and read again is the same.
    outcome = feed_config_data(data)
    if isinstance(outcome, Refused):
        return
    config = parse_config(data, {})
    assert parse_config(config.model_dump(exclude={"dev"}), {}) == config

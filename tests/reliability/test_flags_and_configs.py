"""Bad flags, --set values and config files: exit 2, one line naming the flag/key/file, no run folder."""
from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fcpo.agents.base import AGENTS, build_config, coerce_value
from fcpo.cli import align, evaluate, train
from tests.reliability.conftest import TINY, assert_one_line_error, call

TRAIN_BAD = [
    (["--set", "critic_lr=abc"], ("--set", "critic_lr")),
    (["--set", "constrained=flase"], ("--set", "constrained", "true or false")),
    (["--set", "constrained=yes"], ("constrained",)),
    (["--set", "hidden=2.5"], ("hidden", "integer")),
    (["--set", "critic_batch=0"], ("critic_batch",)),
    (["--set", "hidden=-1"], ("hidden",)),
    (["--set", "init_std=-1"], ("init_std",)),
    (["--set", "critic_epochs=-1"], ("critic_epochs",)),
    (["--set", "critic_lr=nan"], ("critic_lr", "finite")),
    (["--set", "max_kl=inf"], ("max_kl", "finite")),
    (["--set", "temperature=0"], ("temperature",)),
    (["--set", "nonsense=1"], ("nonsense",)),
    (["--set", "novalue"], ("--set", "KEY=VALUE")),
    (["--seed", "-1"], ("--seed",)),
    (["--iterations", "0"], ("--iterations",)),
    (["--iterations", "-3"], ("--iterations",)),
    (["--threads", "0"], ("--threads",)),
    (["--device", "tpu"], ("--device",)),
    (["--device", "cuda:99"], ("cuda:99",)),
    (["--alpha", "1.5"], ("--alpha",)),
    (["--alpha", "nan"], ("--alpha",)),
    (["--agent", "nosuch"], ("nosuch",)),
    (["--iterations", "2.5"], ("--iterations",)),
    (["--dataset", "nosuch"], ("--dataset",)),
    (["--name", "a/b"], ("--name",)),
    (["--config", "missing.yaml"], ("missing.yaml",)),
]


@pytest.mark.parametrize("args, expected", TRAIN_BAD, ids=[" ".join(a) for a, _ in TRAIN_BAD])
def test_train_bad_flag_is_one_line_and_makes_no_folder(args, expected, tmp_path, capsys):
    code, _, err = call(train.main, [*TINY, "--iterations", "2", *args], capsys)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_device_cuda_without_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present (cuda:99 covers the missing-device case)")
    code, _, err = call(train.main, [*TINY, "--iterations", "2", "--device", "cuda:0"], capsys)
    assert_one_line_error(code, err, "cuda:0", "no CUDA")


CONFIG_BAD = [
    ("iterations: 2.5\n", ("config.yaml", "iterations")),
    ("seed: -1\n", ("config.yaml", "seed")),
    ("agent_config: {constrained: flase}\n", ("config.yaml", "constrained")),
    ("agent_config: {hidden: 2.5}\n", ("config.yaml", "hidden")),
    ("agent_config: {critic_lr: fast}\n", ("config.yaml", "critic_lr")),
    ("colour: red\n", ("config.yaml", "colour")),
    ("- a\n- b\n", ("config.yaml", "mapping")),
    ("iterations: [1\n", ("config.yaml", "line")),
    ("!!python/object/apply:os.system [echo pwned]\n", ("config.yaml",)),
    ("device: quantum\n", ("config.yaml", "device")),
    ("agent: nosuch\nagent_config: {hidden: 8}\n", ("config.yaml", "nosuch")),
    ("threads: 0\n", ("config.yaml", "threads")),
]


@pytest.mark.parametrize("text, expected", CONFIG_BAD, ids=[t.splitlines()[0][:30] for t, _ in CONFIG_BAD])
def test_bad_config_file_names_file_and_key(text, expected, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(text)
    code, _, err = call(train.main, [*TINY, "--config", "config.yaml"], capsys)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "pwned").exists()


def test_binary_config_file_names_the_file(tmp_path, capsys):
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe\x00garbage\x80")
    code, _, err = call(train.main, [*TINY, "--config", "config.yaml"], capsys)
    assert_one_line_error(code, err, "config.yaml")


def test_set_float_in_yaml11_exponent_form_is_a_float(capsys):
    code, out, err = call(train.main, [*TINY, "--set", "critic_lr=1e-4", "--set", "constrained=false",
                                       "--print-config"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)["agent_config"]
    assert cfg["critic_lr"] == 1e-4 and isinstance(cfg["critic_lr"], float) and cfg["constrained"] is False


def test_config_file_exponent_string_becomes_float(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("agent_config: {critic_lr: 1e-4, hidden: '32'}\n")  # YAML 1.1: a string
    code, out, err = call(train.main, [*TINY, "--config", "c.yaml", "--print-config"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)["agent_config"]
    assert cfg["critic_lr"] == 1e-4 and cfg["hidden"] == 32


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**12, 10**12))
def test_int_text_round_trips_and_floats_are_refused(n):
    assert coerce_value(str(n), int, "k", "w") == n
    with pytest.raises(ValueError, match="'k'"):
        coerce_value(n + 0.5, int, "k", "w")


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_round_trips(x):
    assert coerce_value(repr(x), float, "k", "w") == x
    assert coerce_value(f"{x:e}", float, "k", "w") == pytest.approx(x, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=8))
def test_bool_takes_true_false_only(text):
    if text.strip().lower() in ("true", "false"):
        assert coerce_value(text, bool, "b", "w") is (text.strip().lower() == "true")
    else:
        with pytest.raises(ValueError, match="'b'.*true or false"):
            coerce_value(text, bool, "b", "w")


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_every_agent_refuses_a_nan_float_field_naming_it(agent):
    import dataclasses
    import typing

    cls = AGENTS[agent].config_cls
    hints = typing.get_type_hints(cls)
    name = next(f.name for f in dataclasses.fields(cls) if hints[f.name] is float)
    with pytest.raises(ValueError, match=f"--set: key {name!r}"):
        build_config(cls, {name: "nan"}, "--set")


EVAL_BAD = [
    (["no-such-run"], ("no-such-run",)),
    (["--baseline", "mf", "--dataset", "synthetic"], ("--out",)),
    (["--baseline", "mf", "--dataset", "synthetic", "--out", "x.json", "--k", "0"], ("--k",)),
    (["--baseline", "mf", "--dataset", "synthetic", "--out", "x.json", "--alpha", "nan"], ("--alpha",)),
    (["run", "--baseline", "mf", "--out", "x.json"], ("not both",)),
    ([], ("RUN_DIR",)),
]


@pytest.mark.parametrize("args, expected", EVAL_BAD, ids=[" ".join(a) or "none" for a, _ in EVAL_BAD])
def test_eval_bad_input_is_one_line(args, expected, tmp_path, capsys):
    code, _, err = call(evaluate.main, args, capsys)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "x.json").exists()


ALIGN_BAD = [
    (["--ks", "0"], ("--ks",)),
    (["--sft-lr", "nan"], ("--sft-lr",)),
    (["--pref-epochs", "-1"], ("--pref-epochs",)),
    (["--seed", "-1"], ("--seed",)),
    (["--beta", "inf"], ("--beta",)),
    (["--negatives", "0"], ("--negatives",)),
    (["--resume", "nowhere"], ("nowhere",)),
]


@pytest.mark.parametrize("args, expected", ALIGN_BAD, ids=[" ".join(a) for a, _ in ALIGN_BAD])
def test_align_bad_flag_is_one_line_and_makes_no_folder(args, expected, tmp_path, capsys):
    code, _, err = call(align.main, ["--dataset", "synthetic", "--run-dir", "runs", *args], capsys)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "runs").exists()


def test_align_refuses_an_existing_name_and_leaves_it(tmp_path, capsys):
    folder = tmp_path / "runs" / "taken"
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("mine")
    code, _, err = call(align.main, ["--dataset", "synthetic", "--run-dir", "runs", "--name", "taken"], capsys)
    assert_one_line_error(code, err, "taken", "exists")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (folder / "keep.txt").read_text() == "mine"


def test_bench_negative_iterations_is_one_line(capsys):
    from fcpo.cli import bench

    code, _, err = call(bench.main, ["--iterations", "-3"], capsys)
    assert_one_line_error(code, err, "--iterations")
    assert math.isfinite(code)


def test_declared_param_ranges_are_enforced_naming_the_field():
    from dataclasses import dataclass

    from fcpo.agents.base import param

    @dataclass
    class Toy:
        lr: float = param(1e-3, "step size", low=0, low_open=True)
        ratio: float = param(0.5, "a fraction", low=0, high=1)
        batch: int = param(8, "rows", low=1)

    assert build_config(Toy, {"lr": "2e-3", "ratio": "1", "batch": "1"}, "--set") == Toy(2e-3, 1.0, 1)
    for key, value, text in (("lr", "0", r"lr must lie in \(0, inf\)"), ("ratio", "1.5", r"ratio must lie in \[0, 1\]"),
                             ("batch", "0", r"batch must lie in \[1, inf\)")):
        with pytest.raises(ValueError, match=f"--set: Toy: {text}"):
            build_config(Toy, {key: value}, "--set")


# Fields of the large-action and iALP configs, declared with param(..., low=...) ranges.
OTHER_AGENTS_RANGES = [
    ("ialp", "reward_temperature", "0"), ("ialp", "reward_lr", "-1"), ("ialp", "reward_batch", "0"),
    ("ialp", "actor_lr", "0"), ("tpgr", "depth", "0"), ("tpgr", "hidden", "-1"), ("tpgr", "lr", "-1"),
    ("wolpertinger", "actor_lr", "-1"), ("wolpertinger", "critic_lr", "0"), ("wolpertinger", "warmup", "-1"),
    ("wolpertinger", "noise_sigma", "-1"),
]


@pytest.mark.parametrize("agent, key, value", OTHER_AGENTS_RANGES, ids=[f"{a}-{k}" for a, k, _ in OTHER_AGENTS_RANGES])
def test_other_agents_refuse_out_of_range_values(agent, key, value):
    with pytest.raises(ValueError, match=key):
        build_config(AGENTS[agent].config_cls, {key: value}, "--set")

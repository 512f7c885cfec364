"""The task registry, the one CLI, the presets and progress reporting (no training here)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from app.imaging.card import Preprocessing
from training import cli, tasks
from training.core import options as opts
from training.core.card import check_fields
from training.core.progress import Progress
from training.core.splits import split_by_group

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("pneumonia_xray", "covid_ct", "brain_tumor_mri", "phantom_tumor_xray")


def _card(name: str) -> dict[str, Any]:
    """The committed artifact's card (its newest version, the one the service serves)."""
    folders = (ROOT / "models" / name).iterdir()
    newest = max(folders, key=lambda p: Version(p.name))
    return json.loads((newest / "model_card.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_the_demo_preset_reproduces_the_committed_card(name: str) -> None:
    task = tasks.get(name)
    preset = opts.read_preset(task.preset("demo"), "train")
    recorded = task.recorded(opts.build(task.train_options, preset))
    card = _card(name)
    # through the model: a card from before a field (``order``) means its default
    recorded_prep = Preprocessing.model_validate(recorded["preprocessing"])
    assert recorded_prep == Preprocessing.model_validate(card["input"]["preprocessing"])
    for key, value in recorded["training"].items():
        if key != "config":
            assert card["training"][key] == value, key
    config, defaults = recorded["training"]["config"], card["training"]["config"]
    # every recorded hyper-parameter is the preset's; one the card predates is at its default
    for key, value in config.items():
        assert defaults.get(key, value) == value, key
    assert set(defaults) <= set(config)


def test_the_phantom_study_preset_is_the_one_the_card_summarises() -> None:
    task = tasks.get("phantom_tumor_xray")
    assert task.study_options is not None
    study = opts.build(task.study_options, opts.read_preset(task.preset("demo"), "study"))
    summary = _card("phantom_tumor_xray")["training"]["normalisation_study"]
    assert list(study.input_size) == summary["input_size"] and study.epochs == summary["epochs"]


@pytest.mark.parametrize("name", MODELS)
def test_every_preset_table_is_valid(name: str) -> None:
    task = tasks.get(name)
    for section in ("synth", "synth_test"):
        built = opts.build(task.synth_options, opts.read_preset(task.preset("demo"), section))
        assert built.seed in (1, 2)
    synth = opts.read_preset(task.preset("demo"), "synth")
    test = opts.read_preset(task.preset("demo"), "synth_test")
    assert synth["seed"] != test["seed"]  # the held-out test set uses another seed


def test_names_and_aliases() -> None:
    assert tasks.names()[:4] == list(MODELS)
    assert tasks.get("pneumonia") is tasks.get("pneumonia_xray")
    assert tasks.get("brain_mri").name == "brain_tumor_mri"
    assert tasks.get("phantom").name == "phantom_tumor_xray"
    with pytest.raises(KeyError):
        tasks.get("knee_mri")


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_each_verb_help_lists_the_models(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)


def test_task_help_is_that_tasks_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "covid_ct", "--help"])
    ct = capsys.readouterr().out
    assert "--volume-shape" in ct and "--negative" in ct and "--arch" not in ct
    with pytest.raises(SystemExit):
        cli.main(["train", "phantom", "--help"])
    phantom = capsys.readouterr().out
    assert "--stages" in phantom and "ResNet stages" in phantom and "--dropout" not in phantom
    with pytest.raises(SystemExit):
        cli.main(["synth", "phantom_tumor_xray", "--help"])
    assert "--workers" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [["--arch", "cnn"], ["--set", "arch=cnn"], ["--set", "epochs=many"], ["--set", "epochs"]],
)
def test_an_option_the_task_does_not_take_is_an_error(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "covid_ct", "--data", "nowhere", *extra])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_a_task_without_a_study_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["study", "covid_ct", "--data", "x", "--out", "y.json"])
    assert exc.value.code == 2 and "no study" in capsys.readouterr().err


def test_preset_then_flags_then_set() -> None:
    argv = ["train", "covid_ct", "--data", "d", "--preset", "demo", "--epochs", "3"]
    task, verb, args, options = cli.parse([*argv, "--set", "seed=9", "--set", "negative=CT-0,CT-1"])
    assert (task.name, verb, args.data) == ("covid_ct", "train", "d")
    assert options.epochs == 3 and options.seed == 9 and options.width == 0.5  # from the preset
    assert options.negative == ("CT-0", "CT-1") and options.volume_shape == (32, 64, 64)
    _, _, _, other = cli.parse(["train", "covid_ct", "--data", "d", "--no-augment"])
    assert other.augment is False and other.epochs == task.train_options().epochs


def test_option_values_are_checked() -> None:
    cls = tasks.get("pneumonia_xray").train_options
    assert opts.build(cls, {"width": "none"}).width is None
    assert opts.build(cls, {"width": "0.25", "synthetic": "yes"}).width == 0.25
    for bad in ({"arch": "vgg"}, {"channels": 2}, {"size": 1.5}, {"synthetic": "maybe"}):
        with pytest.raises(opts.OptionError):
            opts.build(cls, bad)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert "loss" not in fields and "base_filters" not in fields  # no segmentation options


def test_synth_writes_the_kaggle_3m_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["synth", "brain_tumor_mri", "--out", str(tmp_path), "--n", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    masks = list(tmp_path.glob("kaggle_3m/*/*_mask.tif"))
    assert out["written"] >= 4 and masks


def test_the_card_writer_refuses_unknown_fields() -> None:
    check_fields({"name": "x", "output_shape": [1]})
    with pytest.raises(ValueError, match="bogus"):
        check_fields({"name": "x", "bogus": 1})
    check_fields({"name": "x", "bogus": 1}, allowed_extra=["bogus"])


def test_progress_is_json_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSERVE_PROGRESS", raising=False)
    stream = io.StringIO()
    with Progress("load", 40, unit="image", stream=stream) as bar:
        for _ in range(40):
            bar.update()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert 2 <= len(lines) <= 22  # one per 5 % at most, plus the final one
    assert lines[-1]["done"] == 40 and lines[-1]["total"] == 40 and "elapsed_s" in lines[-1]
    assert all(line["progress"] == "load" and line["unit"] == "image" for line in lines)
    monkeypatch.setenv("MEDSERVE_PROGRESS", "off")
    quiet = io.StringIO()
    with Progress("load", 3, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_split_by_group_options() -> None:
    groups = [f"g{i // 3}" for i in range(60)]  # 20 groups of 3
    strata = [int(g[1:]) % 2 for g in groups]
    a, b, rest = split_by_group(groups, [0.2, 0.3], seed=5, strata=strata)
    assert len(a) + len(b) + len(rest) == 60
    parts = [{groups[i] for i in p} for p in (a, b, rest)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert [len(p) for p in parts] == [4, 6, 10]  # per stratum of 10: 2, 3, 5
    assert all({strata[i] for i in p} == {0, 1} for p in (a, b, rest))
    sizes = [1] * 10 + [10] * 2  # by items: fractions of the items, whole groups
    items = [f"s{k}" for k, n in enumerate(sizes) for _ in range(n)]
    first, last = split_by_group(items, [0.5], seed=0, by_items=True)
    assert abs(len(first) - 15) <= 5 and {items[i] for i in first}.isdisjoint(
        {items[i] for i in last}
    )

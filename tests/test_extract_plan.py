"""Stage 1 plans once: `extract.py` turns its options into one checked plan (patients listed, CSVs read, device,
weights and crop resolved), refuses from it before anything is written, and the run consumes it without
checking or reading anything again."""

from __future__ import annotations

import h5py
import pytest

from conftest import SMALL_CLI_ARGS, assert_one_line_error, run_main, small_settings
from lymphocytosis.cli import extract as extract_cli
from lymphocytosis.contract import layout
from lymphocytosis.defaults import FeatureKind, MeasurementSet, Precision, Stain, StorageDtype
from lymphocytosis.errors import InputError
from lymphocytosis.extract import backbones, embedder, plan, preprocessing, registry
from lymphocytosis.extract.measuring import AsMeasured
from lymphocytosis.extract.morphometry import MeasurementSettings


def counting(monkeypatch, module, name: str) -> list:
    """Replace `module.name` by a wrapper that records each call; returns the record."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_each_check_runs_once_and_the_csvs_are_read_once(synthetic_root, tmp_path, monkeypatch):
    csv_reads = counting(monkeypatch, layout, "read_split_tables")
    devices = counting(monkeypatch, plan, "resolve_device")
    weights = counting(monkeypatch, plan, "weights_choice")
    crops = counting(monkeypatch, plan, "crop_and_size")
    also_weights = counting(monkeypatch, backbones, "weights_choice")
    also_devices = counting(monkeypatch, embedder, "resolve_device")
    also_crops = counting(monkeypatch, preprocessing, "crop_and_size")
    out = tmp_path / "e.h5"
    result = run_main(extract_cli.main, ["--root", str(synthetic_root), "--out", str(out), *SMALL_CLI_ARGS, "-q"])
    assert result.code == 0, result.stderr
    assert (len(csv_reads), len(devices), len(weights), len(crops)) == (1, 1, 1, 1)
    assert not also_weights and not also_devices and not also_crops  # the run did not check again
    with h5py.File(out, "r") as handle:
        assert handle.attrs["n_patients"] == 15 and isinstance(handle.attrs["precision"], str)


def test_the_plan_is_typed_and_resolved(synthetic_root, tmp_path):
    planned = plan.plan_embedding(synthetic_root, tmp_path / "e.h5", small_settings(crop=None))
    task = planned.task
    assert isinstance(task, plan.EmbeddingPlan) and len(planned.patients) == 15
    assert (task.device.type, task.weights, task.crop, task.input_size, task.workers) == ("cpu", "embedded", 112, 112, 0)
    assert task.weights_file is not None and task.weights_file.is_file()
    measuring = plan.plan_measuring(synthetic_root, tmp_path / "m.h5", MeasurementSettings(), workers=2)
    assert isinstance(measuring.task, plan.MeasuringPlan) and measuring.task.workers == 2
    assert not (tmp_path / "e.h5").exists() and not (tmp_path / "m.h5").exists()  # planning writes nothing


@pytest.mark.parametrize(("changes", "message"), [
    ({"device": "tpu"}, "--device tpu: expected auto, cpu, cuda or cuda:K"),
    ({"precision": "fp8"}, "--precision fp8: expected fp32 or bf16"),
    ({"features": "all"}, "--features all: expected one of pooled, multiscale"),
    ({"stain": "blue"}, "--stain blue: expected one of none, grayscale, reinhard, slide"),
    ({"weights": "hub", "model": "dinobloom-s"}, "--model dinobloom-s needs --weights FILE"),
    ({"crop": 8}, "--crop 8: must be between 16 and 224 pixels"),
])
def test_the_plan_refuses_before_anything_is_loaded(synthetic_root, tmp_path, changes, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        plan.plan_embedding(synthetic_root, tmp_path / "e.h5", small_settings(**changes))
    assert not list(tmp_path.iterdir())


def test_a_registered_encoder_is_planned_with_its_own_crop(synthetic_root, tmp_path):
    weights = tmp_path / "DinoBloom-S.pth"
    weights.write_bytes(b"not read while planning")
    planned = plan.plan_embedding(synthetic_root, tmp_path / "e.h5", small_settings(model="dinobloom-s", crop=None,
                                                                                       weights=str(weights)))
    entry = registry.REGISTRY["dinobloom-s"]
    assert (planned.task.crop, planned.task.input_size) == (entry.default_crop, entry.input_size)


def test_the_command_refuses_from_the_plan_and_leaves_no_log(synthetic_root, tmp_path):
    out = tmp_path / "out" / "e.h5"
    result = run_main(extract_cli.main, ["--root", str(synthetic_root), "--out", str(out), "--device", "cuda:99", "-q"])
    assert_one_line_error(result, "--device cuda:99")
    assert not (tmp_path / "out").exists()


def test_choice_sets_keep_their_strings():
    """The command line and the files take and record the same strings as before the enums."""
    assert [str(s) for s in Stain] == ["none", "grayscale", "reinhard", "slide"]
    assert [str(s) for s in MeasurementSet] == ["morphometry", "colour"]
    assert [str(s) for s in FeatureKind] == ["pooled", "multiscale"]
    assert [str(s) for s in Precision] == ["fp32", "bf16"] and [str(s) for s in StorageDtype] == ["float32", "float16"]
    assert plan.ExtractSettings.__dataclass_fields__["stain"].default == "none"


def test_a_measuring_run_packs_no_patients_and_fakes_no_device():
    maker = AsMeasured()
    assert maker.pack_size is None and not hasattr(maker, "device") and not hasattr(maker, "batch_size")


def test_timm_names_are_recognised_by_timm_not_by_error_text():
    assert backbones.known_to_timm("resnet18") and backbones.known_to_timm("resnet18.a1_in1k")
    assert backbones.known_to_timm("hf-hub:timm/resnet18.a1_in1k")  # the hub's configuration names the architecture
    assert not backbones.known_to_timm("no_such_model_xyz")

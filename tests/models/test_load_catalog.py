"""``load_catalog``: idempotent, all-or-nothing, clear errors naming file and entry."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from models.models import InferenceModel, ModelPrecision, ModelProfile, Precision

pytestmark = pytest.mark.django_db


def snapshot() -> dict:
    """Every catalog row, compared whole (ids, timestamps and computed values included)."""
    return {
        model.__name__: sorted(model.objects.values_list(), key=repr)
        for model in (Precision, InferenceModel, ModelPrecision, ModelProfile)
    }


def test_loading_twice_gives_the_same_database(catalog):
    first = snapshot()
    out = StringIO()
    call_command("load_catalog", stdout=out)
    assert "0 created, 0 updated, 37 unchanged" in out.getvalue()
    assert "0 profiles written" in out.getvalue()
    assert snapshot() == first


def test_the_bundled_catalog_has_37_real_models_and_no_fictional_one(catalog):
    assert InferenceModel.objects.count() == 37
    assert not InferenceModel.objects.filter(hf_id__icontains="30B-Vision").exists()
    # 37 models x 4 precisions x 6 GPU models
    assert ModelProfile.objects.count() == 37 * 4 * 6


def test_loading_into_an_empty_database_creates_everything(db):
    InferenceModel.objects.all().delete()
    out = StringIO()
    call_command("load_catalog", stdout=out)
    assert "37 created" in out.getvalue()
    assert InferenceModel.objects.count() == 37


def test_an_edited_model_is_restored_and_its_profiles_recomputed(catalog):
    model = InferenceModel.objects.get(hf_id="meta-llama/Llama-3.1-8B-Instruct")
    InferenceModel.objects.filter(pk=model.pk).update(total_params_b=80.3)
    out = StringIO()
    call_command("load_catalog", stdout=out)
    assert "1 updated" in out.getvalue()
    assert InferenceModel.objects.get(pk=model.pk).total_params_b == 8.03


def _broken_copy(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = json.loads(Path(settings.CATALOG_DATA_FILE).read_text())
    mutate(data)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["models"][3].update(total_params_b=-8), "total_params_b"),
        (lambda d: d["models"][5].pop("num_layers"), "num_layers"),
        (lambda d: d["models"][2].update(active_params_b=9999.0), "active_params_b"),
        (lambda d: d["models"][7].update(precisions=["fp64"]), "fp64"),
        (lambda d: d["models"].append(dict(d["models"][0])), "duplicate"),
    ],
)
def test_a_malformed_file_names_file_and_entry_and_changes_nothing(catalog, tmp_path, mutate, expected):
    before = snapshot()
    # Make the valid part of the file differ from the database, to prove nothing is written.
    def mutate_and_touch(data):  # type: ignore[no-untyped-def]
        data["models"][0]["notes"] = "edited in the broken file"
        mutate(data)

    path = _broken_copy(tmp_path, mutate_and_touch)
    with pytest.raises(CommandError) as excinfo:
        call_command("load_catalog", str(path))
    message = str(excinfo.value)
    assert str(path) in message
    assert expected in message
    assert "nothing changed" in message
    assert snapshot() == before


def test_a_file_that_is_not_json_is_refused(catalog, tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text('{"schema_version": 1, "models": [')
    with pytest.raises(CommandError, match="catalog.json"):
        call_command("load_catalog", str(path))


def test_a_missing_file_is_refused(catalog, tmp_path):
    with pytest.raises(CommandError, match="nope.json"):
        call_command("load_catalog", str(tmp_path / "nope.json"))

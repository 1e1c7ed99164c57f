"""The dataset-format registry: the catalog names a format, build_dataset builds it through the registry."""
import dataclasses

import pytest

from sgg.config import get_default_config
from sgg.data import build as data_build
from sgg.data.catalog import get_dataset_files
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, VG150Dataset


def test_vg150_is_registered():
    assert DATASET_FORMAT_REGISTRY.get("vg150") is VG150Dataset
    assert "vg150" in DATASET_FORMAT_REGISTRY.names()


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"'no_such_format' is not registered in the DATASET_FORMAT registry\. "
                                       r"Known: .*vg150"):
        DATASET_FORMAT_REGISTRY.get("no_such_format")


def test_catalog_names_the_format(tmp_path):
    (tmp_path / "mydata").mkdir()
    assert get_dataset_files("mydata_test", str(tmp_path)).format == "vg150"
    assert get_dataset_files("VG_stanford_filtered_with_attribute_train", str(tmp_path)).format == "vg150"


def test_build_dataset_resolves_the_format_through_the_registry(tmp_path, monkeypatch):
    (tmp_path / "mydata").mkdir()
    real = get_dataset_files

    def fake(name, data_dir=""):
        return dataclasses.replace(real(name, data_dir), format="vg150x")

    monkeypatch.setattr(data_build, "get_dataset_files", fake)
    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path)])
    with pytest.raises(KeyError, match=r"'vg150x' is not registered.*Known: .*vg150\..*Did you mean vg150"):
        data_build.build_dataset(cfg, "mydata_test", is_train=False, mode="predcls")

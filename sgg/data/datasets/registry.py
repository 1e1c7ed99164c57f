"""The dataset-format registry: format name -> dataset class.

``sgg.data.catalog`` says which format a dataset name is in (``DatasetFiles.format``);
:func:`sgg.data.build.build_dataset` builds it with ``DATASET_FORMAT_REGISTRY.get(format)
.from_files(files, **options)``. A registered class takes the catalog's
:class:`~sgg.data.catalog.DatasetFiles` and the options ``num_val_im``, ``filter_empty_rels``,
``filter_non_overlap``, ``filter_duplicate_rels``, ``depth_dir`` in ``from_files`` and yields
the dataset dicts of ``DESIGN.md``. Adding a format is one module under ``sgg/data/datasets/``
that registers its class (and is imported by this package's ``__init__``).
"""
from sgg.registry import Registry

DATASET_FORMAT_REGISTRY = Registry("DATASET_FORMAT")

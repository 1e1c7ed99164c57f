"""sgg: scene graph generation on current PyTorch (pip install -e .[dev]).

The distribution is named ``sgg-bench`` (``sgg`` on PyPI is an unrelated project); the import
name is ``sgg``, and the console command ``sgg`` runs the tools (``sgg relation_train_net ...``).
"""
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "sgg", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md")) as f:
    long_description = f.read()

setup(
    name="sgg-bench",
    version=version,
    description="Scene graph generation (two-stage Motifs, HML, one-stage CoRF, STDG) on plain PyTorch",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",  # no "License ::" classifier: setuptools >= 77 deprecates it for this field
    project_urls={
        # the codebase whose configs, data files and checkpoints sgg reads
        "Scene-Graph-Benchmark": "https://github.com/KaihuaTang/Scene-Graph-Benchmark.pytorch",
    },
    python_requires=">=3.9",
    packages=find_packages(include=["sgg", "sgg.*"]),  # sgg.cli included
    entry_points={"console_scripts": ["sgg = sgg.cli:main"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "yacs>=0.1.8",
        "pyyaml>=5.4",
        "h5py>=3.0",
        # headless build: same cv2 API as opencv-python, without the X11/GL system libraries
        "opencv-python-headless>=4.5",
        "timm>=0.9",
        "tqdm>=4.60",
        "pycocotools>=2.0.6",
        # scene-graph drawings (sgg.utils.visualize) and training curves
        "matplotlib>=3.5",
        "networkx>=2.8",
        "tensorboard>=2.10",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout>=2.1"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

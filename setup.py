"""sgg: scene graph generation on current PyTorch (pip install -e .[dev])."""
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "sgg", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md")) as f:
    long_description = f.read()

setup(
    name="sgg",
    version=version,
    description="Scene graph generation (two-stage Motifs, HML, one-stage CoRF, STDG) on plain PyTorch",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["sgg", "sgg.*"]),
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
        "matplotlib>=3.5",
        "tensorboard>=2.10",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout>=2.1"],
    },
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

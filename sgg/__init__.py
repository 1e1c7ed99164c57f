"""sgg: scene graph generation on current PyTorch."""

__version__ = "0.1.0"

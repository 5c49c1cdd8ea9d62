"""swallow-trt: Swallow LLM checkpoints to TensorRT-LLM engines, Triton repositories and measurements.

Only light modules live at this level; torch, transformers, modelopt and tritonclient are imported
inside the functions that need them so that ``swallow-trt --help`` and ``plan`` start fast.
"""

from swallow_trt._version import __version__

__all__ = ["__version__"]

"""Quantisation and conversion of HF checkpoints into TensorRT-LLM checkpoints (nvidia-modelopt)."""

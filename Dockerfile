# syntax=docker/dockerfile:1
#
# swallow-trt inside NVIDIA's Triton image with TensorRT-LLM, for building and serving engines, and for
# the PyTorch (LLM-API) runtime: the same tensorrt_llm wheel ships trtllm-serve, and Triton's llmapi
# Python model (triton_backend/all_models/llmapi/tensorrt_llm of TensorRT-LLM at the image's version)
# is put at /opt/tensorrt_llm/llmapi/tensorrt_llm for `swallow-trt package --runtime pytorch`.
#
# Engines need TensorRT-LLM's engine-era tool chain (trtllm-build, the TensorRT engine backend, Triton's
# C++ tensorrtllm backend). It was removed from TensorRT-LLM main in mid-2026: the 1.1.x-1.2.x release
# lines are the last that have it. The NGC images "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3"
# carry it. To find the tag for a TensorRT-LLM version, read the "TensorRT-LLM version" line of the Triton
# release notes (docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-<yy>-<mm>.html) or
# the compatibility matrix (.../introduction/compatibility.html).
# Default: 25.12, the newest tag whose contents are confirmed here (TensorRT-LLM 1.1.0, TensorRT
# 10.13.3.9, Python 3.12.3, CUDA 13.0, driver >= 580). The 26.0x tags carry the 1.2.x line; check their
# release notes, then: docker build --build-arg TRITON_TAG=26.0x-trtllm-python-py3 -t swallow-trt .
ARG TRITON_TAG=25.12-trtllm-python-py3
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}

ENV PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models/hf \
    SWALLOW_TRT_HOME=/models/swallow-trt-cache

WORKDIR /opt/swallow-trt
COPY pyproject.toml README.md ./
COPY core ./core
COPY cli ./cli
COPY quantize ./quantize
COPY builders ./builders
COPY triton_repo ./triton_repo
COPY profiles ./profiles
# Every package directory pyproject.toml maps (the install fails on a missing one).
COPY openai_api ./openai_api
COPY profiler ./profiler
COPY workflows ./workflows
COPY text ./text
COPY deploy ./deploy
COPY perf ./perf

# Use the image's own torch, TensorRT-LLM, transformers and nvidia-modelopt (no second torch): install
# this package without dependencies, then only the light ones the image lacks, pinned.
RUN python3 -m pip install --no-cache-dir --no-deps . \
 && python3 -m pip install --no-cache-dir "typer==0.28.0" "rich==15.0.0" "pyyaml==6.0.3" \
 && python3 -c "import importlib.metadata as m; print('TensorRT-LLM', m.version('tensorrt_llm'))" \
 && command -v trtllm-build \
 && command -v trtllm-serve \
 && swallow-trt --version

# Triton's llmapi model, from the TensorRT-LLM tag matching the installed wheel (its model.py must match
# the tensorrt_llm it runs with), fetched at build time.
RUN python3 -c "import importlib.metadata as m, pathlib, urllib.request as u; \
v = m.version('tensorrt_llm'); d = pathlib.Path('/opt/tensorrt_llm/llmapi/tensorrt_llm'); \
base = f'https://raw.githubusercontent.com/NVIDIA/TensorRT-LLM/v{v}/triton_backend/all_models/llmapi/tensorrt_llm/'; \
[((d / f).parent.mkdir(parents=True, exist_ok=True), (d / f).write_bytes(u.urlopen(base + f).read())) \
 for f in ('config.pbtxt', '1/model.py', '1/helpers.py')]"

WORKDIR /work
ENTRYPOINT ["swallow-trt"]
CMD ["--help"]

"""The performance model: how fast a TensorRT-LLM engine runs under in-flight batching.

Pure arithmetic on the light base (no numpy): :mod:`swallow_trt.perf.model` turns a deployment's
shape (bytes and FLOPs per rank, link, GPU) into prefill, decode-step, TTFT/TPOT and throughput
figures; :mod:`swallow_trt.perf.factors` reads the efficiency factors it needs from
``swallow_trt/data/perf_factors.json``, where each factor names the measured figures it was fitted to.
``builders`` (``plan``, the SLO search) and the profiler use it; it sits below them and above
``profiles``.
"""

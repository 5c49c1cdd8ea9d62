"""Load generator and profiler: closed- and open-loop load against a deployment's streaming models,
TTFT / TPOT / throughput figures and their reports (``swallow-trt profile``)."""

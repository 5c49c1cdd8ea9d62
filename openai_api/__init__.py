"""The OpenAI-compatible HTTP API of a deployment: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models``, ``/health``, ``/metrics``, ``/version``, in front of Triton's gRPC endpoint, with the text
logic (chat format, tokenizer, detokeniser, stop strings) in-process and ``tensorrt_llm`` streamed
directly (no Python-backend model per token).

- :mod:`.app`: the FastAPI app (routes, key check, limits, errors, SSE);
- :mod:`.service`: a request's text side and its generation;
- :mod:`.engine`: ``tensorrt_llm`` over ``tritonclient.grpc.aio``;
- :mod:`.schema`: the request bodies; :mod:`.deployment`: what the repository says;
- :mod:`.server`: :func:`~.server.run` and :func:`~.server.start_api_process` (for ``serve``).

Nothing here is imported by ``swallow-trt --help`` or ``plan``.
"""

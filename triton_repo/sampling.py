"""Sampling and guided-decoding options of a request: read and checked once, for the ``chat`` model (which
turns its inputs into ``tensorrt_llm`` inputs with :func:`request_options`) and the reference backend
(which reads the ``tensorrt_llm`` inputs with :func:`read_sampling` and samples with :class:`Sampler`).

Semantics follow TensorRT-LLM's sampling layers: greedy when temperature is 0, when top_k is 1, or when
neither top_k nor top_p is set (TensorRT-LLM's defaults are top_k 0 and top_p 0, which it decodes
greedily); otherwise top-k (0: off) then top-p sampling at the temperature, from a generator seeded per
request (seed 0 when none is given, so a request is reproducible by default). The repetition penalty is
multiplicative over the prompt and the output; presence and frequency penalties are OpenAI's (subtracted,
by output-token presence and count).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swallow_trt.text.pipeline import RequestError
from swallow_trt.triton_repo.configs import SAMPLING_TO_LLM, contract
from swallow_trt.triton_repo.guided import GUIDE_TYPES

NUMPY_DTYPES = {
    "TYPE_FP32": "float32",
    "TYPE_INT32": "int32",
    "TYPE_UINT64": "uint64",
    "TYPE_STRING": "object",
}
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    guide_type: str | None = None
    guide: str | None = None

    @property
    def greedy(self) -> bool:
        if self.temperature == 0 or self.top_k == 1:
            return True
        return not self.top_k and self.top_p is None

    @property
    def guided(self) -> bool:
        return self.guide_type is not None


def _first(raw: Any) -> Any:
    import numpy as np

    flat = np.asarray(raw).reshape(-1)
    if flat.size == 0:
        return None
    return flat[0]


def _float(raw: Any, name: str) -> float | None:
    value = _first(raw)
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number") from None
    if not math.isfinite(f):
        raise RequestError(f"{name} must be finite, got {f}")
    return f


def _int(raw: Any, name: str) -> int | None:
    value = _first(raw)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be an integer") from None


def _text(raw: Any, name: str) -> str | None:
    from swallow_trt.text.pipeline import text_of

    return None if _first(raw) is None else text_of(raw, name)


def read_sampling(get: Callable[[str], Any], names: dict[str, str] | None = None) -> Sampling:
    """The checked options; ``get(name)`` gives an input's array or None. ``names`` maps the option
    (the ``tensorrt_llm`` input name) to the name the caller's inputs use; default: the same names."""
    names = names or {llm: llm for llm in SAMPLING_TO_LLM.values()}

    def arg(llm: str) -> tuple[Any, str]:
        return get(names[llm]), names[llm]

    temperature = _float(*arg("temperature"))
    if temperature is not None and temperature < 0:
        raise RequestError(f"{names['temperature']} must not be negative, got {temperature}")
    top_k = _int(*arg("runtime_top_k"))
    if top_k is not None and top_k < 0:
        raise RequestError(f"{names['runtime_top_k']} must not be negative (0: off), got {top_k}")
    top_p = _float(*arg("runtime_top_p"))
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"{names['runtime_top_p']} must lie in (0, 1], got {top_p}")
    seed = _int(*arg("seed"))
    if seed is not None and not 0 <= seed <= UINT64_MAX:
        raise RequestError(f"{names['seed']} must be an unsigned 64-bit integer, got {seed}")
    repetition = _float(*arg("repetition_penalty"))
    if repetition is not None and repetition <= 0:
        raise RequestError(f"{names['repetition_penalty']} must be positive (1: off), got {repetition}")
    presence = _float(*arg("presence_penalty"))
    frequency = _float(*arg("frequency_penalty"))
    guide_type = _text(*arg("guided_decoding_guide_type"))
    guide = _text(*arg("guided_decoding_guide"))
    type_name, guide_name = names["guided_decoding_guide_type"], names["guided_decoding_guide"]
    if guide_type is not None and guide_type not in GUIDE_TYPES:
        raise RequestError(f"unknown {type_name} {guide_type!r}; one of {', '.join(GUIDE_TYPES)}")
    if guide is not None and guide_type is None:
        raise RequestError(f"{guide_name} needs {type_name} ({', '.join(GUIDE_TYPES)})")
    if guide_type not in (None, "json") and not guide:
        raise RequestError(f"{type_name} {guide_type} needs a {guide_name}")
    if guide_type == "json_schema":
        try:
            schema = json.loads(guide or "")
        except json.JSONDecodeError as exc:
            raise RequestError(f"{guide_name} is not a JSON schema: {exc.msg}") from None
        if not isinstance(schema, dict | bool):
            raise RequestError(f"{guide_name} must be a JSON schema object")
    return Sampling(temperature, top_k, top_p, seed, repetition, presence, frequency, guide_type, guide)


def request_options(get: Callable[[str], Any]) -> list[tuple[str, Any]]:
    """The ``tensorrt_llm`` input tensors (name, [1, 1] array of the contract's dtype) for the sampling
    and guided-decoding inputs a request gave (``get(name)``: the array of an optional input, or None),
    checked first: a bad value raises :class:`RequestError`."""
    import numpy as np

    s = read_sampling(get, {llm: outer for outer, llm in SAMPLING_TO_LLM.items()})
    values: dict[str, float | str | bytes | None] = {
        "temperature": s.temperature,
        "runtime_top_k": s.top_k,
        "runtime_top_p": s.top_p,
        "seed": s.seed,
        "repetition_penalty": s.repetition_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "guided_decoding_guide_type": s.guide_type,
        "guided_decoding_guide": s.guide,
    }
    dtypes = {i["name"]: i["data_type"] for i in contract()["inputs"]}
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = value.encode("utf-8")
        out.append((name, np.array([[value]], dtype=NUMPY_DTYPES[dtypes[name]])))
    return out


class Sampler:
    """Picks a request's next token from its logits (torch), with its own seeded generator."""

    def __init__(self, sampling: Sampling, device: Any = "cpu") -> None:
        import torch

        self.s = sampling
        self.generator: Any = None
        if not sampling.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(sampling.seed or 0)

    def penalize(self, logits: Any, context: list[int], generated: list[int]) -> Any:
        """Penalties on ``logits`` [vocab] (float) given the prompt and the tokens made so far."""
        import torch

        s = self.s
        if s.repetition_penalty not in (None, 1.0) and (context or generated):
            from transformers import RepetitionPenaltyLogitsProcessor

            seen = torch.tensor([[*context, *generated]], device=logits.device)
            logits = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(seen, logits[None])[0]
        if generated and (s.presence_penalty or s.frequency_penalty):
            counts = torch.bincount(
                torch.tensor(generated, device=logits.device), minlength=logits.shape[-1]
            )[: logits.shape[-1]].to(logits.dtype)
            logits = logits - counts * (s.frequency_penalty or 0.0)
            logits = logits - (counts > 0).to(logits.dtype) * (s.presence_penalty or 0.0)
        return logits

    def pick(self, logits: Any) -> int:
        """The next token of penalised (and masked) ``logits`` [vocab]."""
        import torch

        if self.generator is None:
            return int(logits.argmax())
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        scores = logits[None].float()
        if self.s.temperature not in (None, 1.0):
            scores = TemperatureLogitsWarper(float(self.s.temperature))(None, scores)
        if self.s.top_k:
            scores = TopKLogitsWarper(self.s.top_k)(None, scores)
        if self.s.top_p is not None and self.s.top_p < 1:
            scores = TopPLogitsWarper(self.s.top_p)(None, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs[0], 1, generator=self.generator))

"""The Swallow model registry (data in ``data/models.yaml``) and model resolution.

``--model`` accepts an alias (``8b``, ``70b``), any registered repo id (with or without the
``tokyotech-llm/`` prefix, any case) or a local checkpoint directory. For a directory, its own
``config.json`` is the truth; the registry only adds chat format and stop tokens when it recognises
the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from swallow_trt.arch import (
    PYTORCH_ONLY_CLASSES,
    ModelArch,
    RopeScaling,
    arch_from_hf_config,
    read_hf_config,
)
from swallow_trt.errors import InvalidCombinationError, UnknownModelError
from swallow_trt.schema import load_file

DATA_DIR = Path(__file__).parent / "data"

Confidence = Literal["V", "C", "I", "U"]
# qwen3: ChatML with <think> blocks; harmony: gpt-oss's channels. Their renderers are the chat-format
# code's (triton_repo); the registry only names them.
ChatFormat = Literal["none", "alpaca-ja", "llama2", "llama3", "qwen3", "harmony"]
Kind = Literal["base", "instruct"]
Runtime = Literal["engine", "pytorch"]
# available: can be planned and built; refused: listed so users find it, but unsafe to build (the
# Swallow AWQ-INT4 repos); private: made private upstream, listed so the refusal can say so.
Status = Literal["available", "refused", "private"]

CONFIDENCE_MEANING = {
    "V": "read from a copy of the model's config.json, a GGUF metadata dump or the model card",
    "C": "stated on a card or project page, no config seen",
    "I": "inherited from the base model; the Swallow config was not seen (unverified)",
    "U": "unverified",
}

DEFAULT_SYSTEM_PROMPT = "あなたは誠実で優秀な日本人のアシスタントです。"


@dataclass(frozen=True)
class ArchOverrides:
    """Fields a Swallow release changes relative to its base architecture."""

    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    rope_theta: float | None = None
    sliding_window: int | None = None
    torch_dtype: str | None = None
    checkpoint_quant: str | None = None
    checkpoint_desc_act: bool | None = None


@dataclass(frozen=True)
class Base:
    arch: ModelArch
    bos_token_id: int
    eos_token_ids: list[int]
    sources: str


@dataclass(frozen=True)
class Sampling:
    """A card's recommended sampling (generation_config.json where the card defers to it)."""

    temperature: float
    top_p: float
    top_k: int | None = None
    min_p: float | None = None
    reasoning_effort: str | None = None  # gpt-oss harmony: low | medium | high


@dataclass(frozen=True)
class Family:
    title: str
    license: str
    license_confidence: Confidence
    project_page: str | None = None
    runtimes: list[Runtime] = field(default_factory=lambda: ["engine"])
    reasoning: bool = False  # the instruct models think before answering
    sampling: Sampling | None = None
    max_context: int | None = None  # the cards' recommended maximum context (caps max_seq_len)


@dataclass(frozen=True)
class Entry:
    repo: str
    family: str
    base: str
    kind: Kind
    size: str
    released: str
    chat_format: ChatFormat
    stop_words: list[str]
    confidence: dict[str, Confidence]
    version: str | None = None
    arch: ArchOverrides = field(default_factory=ArchOverrides)
    system_prompt: str | None = None
    sources: str = ""
    notes: str = ""
    status: Status = "available"
    use_instead: str | None = None  # refused/private: the repo to quantize instead


@dataclass(frozen=True)
class RegistryFile:
    bases: dict[str, Base]
    families: dict[str, Family]
    models: list[Entry]
    aliases: dict[str, str]


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry with its base facts applied."""

    entry: Entry
    arch: ModelArch
    family: Family
    bos_token_id: int
    eos_token_ids: list[int]

    @property
    def repo(self) -> str:
        return self.entry.repo

    @property
    def name(self) -> str:
        return self.entry.repo.split("/", 1)[1]

    @property
    def runtimes(self) -> list[Runtime]:
        return list(self.family.runtimes)


@dataclass(frozen=True)
class ResolvedModel:
    """What ``--model`` resolved to. ``registered`` is None for an unrecognised local checkpoint."""

    spec: str
    source: Literal["registry", "local"]
    arch: ModelArch
    registered: RegisteredModel | None
    local_path: Path | None = None
    alias: str | None = None

    @property
    def display_name(self) -> str:
        if self.local_path is not None:
            return str(self.local_path)
        assert self.registered is not None
        return self.registered.repo

    @property
    def hf_ref(self) -> str:
        """What the quantize stage is given: the local directory or the hub repo id."""
        return str(self.local_path) if self.local_path is not None else self.display_name


class Registry:
    def __init__(self, data: RegistryFile) -> None:
        self.data = data
        self.models: list[RegisteredModel] = []
        for entry in data.models:
            base = data.bases[entry.base]
            overrides = {k: v for k, v in dataclasses.asdict(entry.arch).items() if v is not None}
            self.models.append(
                RegisteredModel(
                    entry=entry,
                    arch=dataclasses.replace(base.arch, **overrides),
                    family=data.families[entry.family],
                    bos_token_id=base.bos_token_id,
                    eos_token_ids=list(base.eos_token_ids),
                )
            )
        self._by_key = {m.repo.lower(): m for m in self.models}
        self._by_key.update({m.name.lower(): m for m in self.models})

    def get(self, name: str) -> RegisteredModel | None:
        key = name.strip().lower()
        if key in self.data.aliases:
            key = self.data.aliases[key].lower()
        return self._by_key.get(key)

    def suggestions(self, name: str, n: int = 3) -> list[str]:
        candidates = list(self.data.aliases) + [m.repo for m in self.models]
        lowered = {c.lower(): c for c in candidates}
        key = name.strip().lower()
        key_short = key.split("/", 1)[-1]
        import difflib

        close = difflib.get_close_matches(key, lowered, n=n, cutoff=0.5)
        close += difflib.get_close_matches(key_short, [c.split("/", 1)[-1] for c in lowered], n=n, cutoff=0.5)
        out: list[str] = []
        for c in close:
            full = lowered.get(c) or next(v for k, v in lowered.items() if k.split("/", 1)[-1] == c)
            if full not in out:
                out.append(full)
        return out[:n]

    def match_local_config(self, cfg: dict[str, object], directory: Path) -> RegisteredModel | None:
        """Recognise a local checkpoint by ``_name_or_path`` or by its directory name."""
        for candidate in (str(cfg.get("_name_or_path") or ""), directory.name):
            if candidate:
                found = self.get(candidate) or self.get(candidate.rstrip("/").split("/")[-1])
                if found is not None:
                    return found
        return None


@cache
def load_registry() -> Registry:
    from swallow_trt.datacache import cached_load

    return cached_load(
        DATA_DIR / "models.yaml", [Path(__file__), Path(__file__).with_name("arch.py")], _parse_registry
    )


def _parse_registry() -> Registry:
    data = load_file(RegistryFile, DATA_DIR / "models.yaml")
    check_registry(data)
    return Registry(data)


def check_registry(data: RegistryFile) -> None:
    """Cross-references the schema cannot express; a broken registry is a bug, so it raises ValueError."""
    repos = [m.repo for m in data.models]
    duplicates = {r for r in repos if repos.count(r) > 1}
    if duplicates:
        raise ValueError(f"duplicate registry entries: {sorted(duplicates)}")
    for m in data.models:
        if m.base not in data.bases:
            raise ValueError(f"{m.repo}: unknown base {m.base!r}")
        if m.family not in data.families:
            raise ValueError(f"{m.repo}: unknown family {m.family!r}")
        if m.kind == "instruct" and m.chat_format == "none":
            raise ValueError(f"{m.repo}: an instruct model needs a chat format")
        if not m.stop_words:
            raise ValueError(f"{m.repo}: no stop words")
        if m.status != "available" and m.use_instead not in repos:
            raise ValueError(f"{m.repo}: status {m.status} needs use_instead naming a registered repo")
    for name, fam in data.families.items():
        if not fam.runtimes:
            raise ValueError(f"family {name}: no runtime")
    for m in data.models:
        if (
            data.bases[m.base].arch.hf_class in PYTORCH_ONLY_CLASSES
            and "engine" in data.families[m.family].runtimes
        ):
            raise ValueError(f"{m.repo}: {data.bases[m.base].arch.hf_class} has no engine model")
    for alias, target in data.aliases.items():
        if target not in repos:
            raise ValueError(f"alias {alias!r} points at unknown {target!r}")


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``--model``: alias, registry id, or a local checkpoint directory."""
    registry = load_registry()
    text = spec.strip()
    path = Path(text).expanduser()
    looks_like_path = text.startswith((".", "/", "~")) or path.is_dir()
    if looks_like_path:
        if not path.is_dir():
            raise UnknownModelError(
                f"checkpoint directory {text!r} does not exist",
                "pass an existing Hugging Face checkpoint directory, or an alias/id from `swallow-trt models`",
            )
        cfg = read_hf_config(path)
        arch = arch_from_hf_config(cfg, str(path / "config.json"))
        return ResolvedModel(
            spec=spec,
            source="local",
            arch=arch,
            registered=registry.match_local_config(cfg, path),
            local_path=path.resolve(),
        )
    found = registry.get(text)
    if found is None:
        close = registry.suggestions(text)
        hint = ("did you mean " + " or ".join(close) + "? ") if close else ""
        raise UnknownModelError(
            f"unknown model {text!r}",
            hint + "list the known models with `swallow-trt models`, or pass a local checkpoint directory",
        )
    alias = text.lower() if text.lower() in registry.data.aliases else None
    return ResolvedModel(spec=spec, source="registry", arch=found.arch, registered=found, alias=alias)


def check_buildable(model: ResolvedModel) -> None:
    """Refuse checkpoints that neither TensorRT-LLM path loads correctly (plan, quantize and build).

    The Swallow AWQ-INT4 repos were made by GPTQModel with desc_act true: TensorRT-LLM's converter
    takes any quant_method awq for AutoAWQ without checking desc_act and builds corrupt weights, and
    its PyTorch loader does not read HF AWQ at all (shared/contracts/swallow-models-2026.md section 4).
    """
    reg = model.registered
    entry = reg.entry if reg is not None else None
    instead = entry.use_instead if entry is not None and entry.use_instead else None
    # ModelOpt 0.47 exports no int4_awq for Qwen3-MoE on either path: FP8 on the PyTorch runtime is the
    # quantised format that works for it.
    how = (
        "with --fp8 (the PyTorch runtime: ModelOpt exports no int4_awq for Qwen3-MoE) instead"
        if model.arch.hf_class == "Qwen3MoeForCausalLM"
        else "with --int4-awq instead"
    )
    if entry is not None and model.source == "registry" and entry.status == "private":
        raise InvalidCombinationError(
            f"{entry.repo} was made private on 2026-02-23 (significant performance degradation)",
            f"quantize the BF16 RL model {instead} {how}",
        )
    arch = model.arch
    awq_desc_act = arch.checkpoint_quant == "awq" and arch.checkpoint_desc_act
    if awq_desc_act or (entry is not None and model.source == "registry" and entry.status == "refused"):
        target = instead or "the BF16 model it was made from"
        raise InvalidCombinationError(
            f"{model.display_name} is a GPTQModel AWQ-INT4 checkpoint (desc_act true) that TensorRT-LLM "
            "would load as AutoAWQ and build corrupt weights from",
            f"quantize the BF16 RL model {target} {how}",
        )


__all__ = [
    "CONFIDENCE_MEANING",
    "DEFAULT_SYSTEM_PROMPT",
    "ModelArch",
    "RegisteredModel",
    "Registry",
    "ResolvedModel",
    "RopeScaling",
    "check_buildable",
    "load_registry",
    "resolve_model",
]

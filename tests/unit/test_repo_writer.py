"""The repository writer: every config parses as a ModelConfig and the ensemble wires tensors that exist;
the tensorrtllm backend takes its limits from the engine (max_batch_size never above the engine's,
chunked context only with paged context FMHA, gpu_device_ids for TP); every path is relative to the
repository and names a file inside it; the tokenizer (chat template too) and its xgrammar info are written
in upstream's format; refusals leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("transformers")

from swallow_trt.errors import UsageError
from swallow_trt.triton_repo.configs import from_pbtxt
from swallow_trt.triton_repo.repo import MODEL_NAMES, RepoSpec, read_engine, write_repo
from tests.fixtures.tiny import make_tokenizer


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hf"
    make_tokenizer("llama31").save_pretrained(d)
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (d / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    return d


def fake_engine(root: Path, world: int = 4, max_batch: int = 64, paged_ctx: bool = True) -> Path:
    """The layout trtllm-build writes (config.json with build_config/mapping, one rankN.engine a rank)."""
    root.mkdir(parents=True)
    config = {
        "version": "1.2.1",
        "pretrained_config": {"mapping": {"world_size": world, "tp_size": world, "pp_size": 1}},
        "build_config": {
            "max_batch_size": max_batch,
            "max_input_len": 4096,
            "max_seq_len": 8192,
            "plugin_config": {"use_paged_context_fmha": paged_ctx},
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    for r in range(world):
        (root / f"rank{r}.engine").write_bytes(b"\0")
    return root


def configs(repo: Path) -> dict[str, object]:
    return {name: from_pbtxt((repo / name / "config.pbtxt").read_text()) for name in MODEL_NAMES}


def test_reference_repository(hf_dir: Path, tmp_path: Path) -> None:
    repo = write_repo(
        RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2, max_batch_size=16), tmp_path / "r"
    )
    c = configs(repo)
    assert c["tensorrt_llm"].backend == "python"  # type: ignore[attr-defined]
    assert (repo / "tensorrt_llm" / "1" / "model.py").is_file()
    assert (repo / "chat" / "tokenizer" / "tokenizer.json").is_file()
    assert (repo / "chat" / "tokenizer" / "chat_template.jinja").is_file()
    assert (repo / "tensorrt_llm" / "1" / "checkpoint" / "config.json").is_file()
    llm = {k: v.string_value for k, v in c["tensorrt_llm"].parameters.items()}  # type: ignore[attr-defined]
    assert llm["gpt_model_path"] == "tensorrt_llm/1/checkpoint"
    assert llm["enable_kv_cache_reuse"] == "true"
    assert_self_contained(repo, c)
    ens = c["ensemble"]
    assert ens.platform == "ensemble"
    assert ens.max_batch_size == 16
    # Every ensemble step maps to tensors its model declares, and every ensemble output is produced.
    produced = {i.name for i in ens.input}  # type: ignore[attr-defined]
    for step in ens.ensemble_scheduling.step:  # type: ignore[attr-defined]
        model = c[step.model_name]
        assert set(step.input_map) <= {i.name for i in model.input}  # type: ignore[attr-defined]
        assert set(step.input_map.values()) <= produced
        assert set(step.output_map) <= {o.name for o in model.output}  # type: ignore[attr-defined]
        produced |= set(step.output_map.values())
    assert {o.name for o in ens.output} <= produced  # type: ignore[attr-defined]
    assert c["chat"].model_transaction_policy.decoupled  # type: ignore[attr-defined]
    assert "${" not in "".join((repo / n / "config.pbtxt").read_text() for n in MODEL_NAMES)


def test_tensorrtllm_repository_takes_limits_from_the_engine(hf_dir: Path, tmp_path: Path) -> None:
    engine = read_engine(fake_engine(tmp_path / "engine"), kv_cache_free_gpu_mem_fraction=0.85)
    spec = RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2, max_batch_size=64, engine=engine)
    c = configs(write_repo(spec, tmp_path / "r"))
    llm = c["tensorrt_llm"]
    p = {k: v.string_value for k, v in llm.parameters.items()}  # type: ignore[attr-defined]
    assert llm.backend == "tensorrtllm"
    assert llm.max_batch_size == 64
    assert p["gpu_device_ids"] == "0,1,2,3"
    assert p["enable_chunked_context"] == "true"
    assert p["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert p["gpt_model_path"] == "tensorrt_llm/1/engine"
    assert p["enable_kv_cache_reuse"] == "true"  # the engine has paged context FMHA
    assert sorted(f.name for f in (tmp_path / "r" / "tensorrt_llm" / "1" / "engine").iterdir()) == [
        "config.json", "rank0.engine", "rank1.engine", "rank2.engine", "rank3.engine",
    ]  # fmt: skip
    assert_self_contained(tmp_path / "r", c)
    assert not (tmp_path / "r" / "tensorrt_llm" / "1" / "model.py").exists()
    chat = {k: v.string_value for k, v in c["chat"].parameters.items()}  # type: ignore[attr-defined]
    assert chat["max_input_len"] == "4096"  # the engine's


def test_engine_rules(hf_dir: Path, tmp_path: Path) -> None:
    small = read_engine(fake_engine(tmp_path / "e1", world=1, max_batch=8, paged_ctx=False))
    assert not small.enable_chunked_context
    with pytest.raises(UsageError, match="exceeds the engine's max_batch_size 8"):
        write_repo(
            RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2, max_batch_size=9, engine=small),
            tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match="paged context FMHA"):
        read_engine(tmp_path / "e1", enable_chunked_context=True)
    c = configs(
        write_repo(RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2, engine=small), tmp_path / "r2")
    )
    assert "gpu_device_ids" not in c["tensorrt_llm"].parameters  # type: ignore[attr-defined]
    # No paged context FMHA: no KV-cache reuse (it needs it at build time), written explicitly.
    assert c["tensorrt_llm"].parameters["enable_kv_cache_reuse"].string_value == "false"  # type: ignore[attr-defined]
    (tmp_path / "e1" / "rank0.engine").unlink()
    with pytest.raises(UsageError, match=r"lacks rank0\.engine"):
        read_engine(tmp_path / "e1")
    with pytest.raises(UsageError, match="not a TensorRT-LLM engine directory"):
        read_engine(tmp_path)
    (tmp_path / "e2").mkdir()
    (tmp_path / "e2" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="not a TensorRT-LLM engine config"):
        read_engine(tmp_path / "e2")


PATH_KEYS = ("tokenizer_dir", "gpt_model_path", "xgrammar_tokenizer_info_path")


def assert_self_contained(repo: Path, c: dict[str, object]) -> None:
    """Every path parameter of every model is relative and exists inside the repository."""
    seen = 0
    for name, config in c.items():
        for key, value in config.parameters.items():  # type: ignore[attr-defined]
            if key in PATH_KEYS:
                path = Path(value.string_value)
                assert not path.is_absolute(), (name, key, path)
                assert (repo / path).exists(), (name, key, path)
                seen += 1
    assert seen >= 6  # tensorrt_llm's three, chat's, preprocessing's and postprocessing's tokenizer_dir


def test_xgrammar_tokenizer_info_has_upstreams_format(hf_dir: Path, tmp_path: Path) -> None:
    """The file the C++ backend parses (model_instance_state.cc): encoded_vocab by id, the fast
    tokenizer's backend JSON as tokenizer_str, stop_token_ids (EOS and the repository's end token)."""
    from transformers import AutoTokenizer

    repo = write_repo(RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=3), tmp_path / "r")
    info = json.loads((repo / "tensorrt_llm" / "xgrammar_tokenizer_info.json").read_text())
    assert sorted(info) == ["encoded_vocab", "stop_token_ids", "tokenizer_str"]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    vocab = tok.get_vocab()
    assert len(info["encoded_vocab"]) == len(vocab)
    assert all(vocab[t] == i for i, t in enumerate(info["encoded_vocab"]))
    assert json.loads(info["tokenizer_str"]) == json.loads(tok.backend_tokenizer.to_str())
    assert info["stop_token_ids"] == [tok.eos_token_id, 3]


def test_tokenizer_directory_missing_or_empty_is_refused(cli: Any, hf_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for tokenizer, needle in (
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "empty", "no tokenizer files"),
    ):
        with pytest.raises(UsageError, match=needle):
            write_repo(RepoSpec(checkpoint=tokenizer, chat_format="llama3", end_id=2, engine=read_engine(
                fake_engine(tmp_path / f"e-{tokenizer.name}", world=1))), tmp_path / "r")  # fmt: skip
        engine = tmp_path / f"e-{tokenizer.name}"
        result = cli(
            "package", "--engine", str(engine), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "r")
        )
        assert result.exit_code == 2, result.output
        assert needle in result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_refusals(hf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--max-batch-size must be at least 1"):
        write_repo(
            RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2, max_batch_size=0), tmp_path / "r"
        )
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        write_repo(RepoSpec(checkpoint=hf_dir, chat_format="llama3", end_id=2), tmp_path / "taken")
    with pytest.raises(UsageError, match=r"no config\.json"):
        write_repo(RepoSpec(checkpoint=tmp_path, chat_format="llama3", end_id=2), tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "taken"]  # no temporary debris


def test_multi_rank_server_command_runs_one_tritonserver_per_rank(tmp_path: Path) -> None:
    from swallow_trt.triton_repo.server import TritonInstall, TritonServer

    install = TritonInstall(
        Path("/opt/tritonserver/bin/tritonserver"), Path("/opt/tritonserver/backends"), None, None, "system"
    )
    server = TritonServer(tmp_path, install=install, world_size=4, mpirun="/usr/bin/mpirun", grpc_port=8001)
    argv = server.command()
    assert argv[:2] == ["/usr/bin/mpirun", "--allow-run-as-root"]
    ranks = " ".join(argv[2:]).split(" : ")
    assert len(ranks) == 4
    assert all(r.startswith("-n 1 /opt/tritonserver/bin/tritonserver") for r in ranks)
    assert all("--grpc-port=8001" in r for r in ranks)
    prefixes = {a for r in ranks for a in r.split() if "shm-region-prefix-name" in a}
    assert len(prefixes) == 4  # one Python-backend shared-memory region per rank
    assert "--load-model=tensorrt_llm" not in ranks[0]
    assert all("--model-control-mode=explicit --load-model=tensorrt_llm" in r for r in ranks[1:])
    assert TritonServer(tmp_path, install=install).command()[0] == "/opt/tritonserver/bin/tritonserver"


def test_package_with_a_target_follows_the_engine_on_chunked_context(hf_dir: Path, tmp_path: Path) -> None:
    """A target profile enables chunked context where the engine allows it: an engine that trtllm-build
    built without paged context FMHA (e.g. int4_awq with an FP8 KV cache) is packaged with it off, one
    with paged context FMHA with it on."""
    from swallow_trt.triton_repo.package import PackageRequest, package

    for paged, name in ((False, "off"), (True, "on")):
        engine = fake_engine(tmp_path / f"e-{name}", world=1, max_batch=8, paged_ctx=paged)
        result = package(
            PackageRequest(out=tmp_path / f"r-{name}", engine=engine, tokenizer=hf_dir, target="hopper")
        )
        c = configs(result.repo)
        value = c["tensorrt_llm"].parameters["enable_chunked_context"].string_value  # type: ignore[attr-defined]
        assert value == ("true" if paged else "false")

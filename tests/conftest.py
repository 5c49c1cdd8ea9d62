from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from swallow_trt.cli.main import app
from tests.fixtures.triton import ReferenceServed, ScheduleServed, SharedServers, StartTriton

if TYPE_CHECKING:
    from swallow_trt.triton_repo.server import TritonInstall


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches and outputs go to a temporary SWALLOW_TRT_HOME, never the developer's own."""
    import os

    os.environ["SWALLOW_TRT_HOME"] = str(tmp_path_factory.mktemp("swallow-trt-home"))


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run the real CLI in-process; returns the click Result (stdout and stderr separate)."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def plan_json(cli: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def run(*args: str) -> dict[str, Any]:
        result = cli("plan", *args, "--json")
        assert result.exit_code == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    return run


def write_hf_config(directory: Path, **overrides: Any) -> Path:
    """A small Llama config.json (the shapes are what matter to the planner, not the weights)."""
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 43176,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "torch_dtype": "bfloat16",
    }
    cfg.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory


# ------------------------------------------------------------------------------------------ Triton


@pytest.fixture(scope="session")
def triton_install(_isolated_home: None) -> TritonInstall:
    """The Triton server found here (finding it assembles its backend directory under the temporary
    SWALLOW_TRT_HOME). Every test marked ``requires_triton``, and every test that uses a server
    fixture, is skipped where there is none."""
    from swallow_trt.errors import EnvironmentProblem
    from swallow_trt.triton_repo.server import find_tritonserver

    try:
        return find_tritonserver()
    except EnvironmentProblem as exc:  # pragma: no cover - the serve extra is missing
        pytest.skip(f"no runnable Triton server: {exc.one_line()}")


@pytest.fixture(autouse=True)
def _requires_triton(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("requires_triton") is not None:
        request.getfixturevalue("triton_install")


@pytest.fixture
def start_triton(triton_install: TritonInstall, tmp_path: Path) -> Iterator[StartTriton]:
    """A server of the test's own, for a test that breaks it or needs a repository nobody else serves."""
    servers = StartTriton(tmp_path)
    try:
        yield servers
    finally:
        servers.close()


_shared: SharedServers | None = None
_SHARED_FIXTURES = ("reference_triton", "forced_schedule_triton")


@pytest.fixture(scope="session")
def shared_servers(
    triton_install: TritonInstall, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedServers]:
    """The servers several test files share (one per fixture below), each started on first use and
    stopped, with a check that no server or stub process of it is left, after the last test that uses
    it (see pytest_runtest_teardown). A test that stops, kills or reconfigures a server must not use
    them: it starts its own with ``start_triton``."""
    global _shared
    _shared = SharedServers(tmp_path_factory.mktemp("shared-triton"))
    try:
        yield _shared
    finally:
        pool, _shared = _shared, None
        pool.close()


@pytest.fixture(scope="session")
def reference_triton(shared_servers: SharedServers) -> ReferenceServed:
    """The reference repository of tests/fixtures/repos.py (a tiny random Llama-3.1 on the reference
    backend, served from where it was moved to), served once for every test that uses it."""
    from tests.fixtures.repos import reference_repo

    made: list[Path] = []

    def make(root: Path) -> Path:
        repo, checkpoint = reference_repo(root)
        made.append(checkpoint)
        return repo

    server, repo = shared_servers.get("reference_triton", make, timeout_s=600)
    return ReferenceServed(server, repo, made[0])


@pytest.fixture(scope="session")
def forced_schedule_triton(shared_servers: SharedServers) -> ScheduleServed:
    """The zero-delay schedule model that refuses unforced output lengths and records what it did
    (tests/fixtures/repos.py), served once for every test that uses it."""
    from tests.fixtures.repos import RECORD, forced_schedule_repo

    server, repo = shared_servers.get("forced_schedule_triton", forced_schedule_repo, timeout_s=600)
    return ScheduleServed(server, repo, repo.parent / RECORD)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a test's own teardown: stop each shared server that no test still to run uses, so that
    the servers of earlier files do not hold memory through the rest of the session."""
    result = yield
    if _shared is not None and _shared.running:
        still = _used_from(item.session, nextitem)
        for name in _shared.running:
            if name not in still:
                _shared.release(name)
    return result


def _used_from(session: pytest.Session, nextitem: pytest.Item | None) -> set[str]:
    """The shared server fixtures that ``nextitem`` and the tests after it use."""
    if nextitem is None:
        return set()
    suffix: dict[int, frozenset[str]] | None = getattr(session, "_shared_triton_suffix", None)
    if suffix is None:
        suffix, later = {}, frozenset[str]()
        for it in reversed(session.items):
            later = later | {name for name in getattr(it, "fixturenames", ()) if name in _SHARED_FIXTURES}
            suffix[id(it)] = later
        session._shared_triton_suffix = suffix  # type: ignore[attr-defined]
    return set(suffix.get(id(nextitem), _SHARED_FIXTURES))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n 2 --dist loadgroup``): the tests of one shared server run on one worker
    (one server, not one per worker); the tests of a file that share a module-scoped fixture (a server
    of the module's own) stay together, so that it starts once; every other test goes where a worker
    is free."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        names = getattr(item, "fixturenames", ())
        shared = [name for name in _SHARED_FIXTURES if name in names]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())

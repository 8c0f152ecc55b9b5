"""Checkpoint loading, architecture inference and hash-verified downloads (against a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from aletheia.models import checkpoints
from aletheia.models.checkpoints import (
    ISPL_BASE_URL,
    PUBLISHED_WEIGHTS,
    CheckpointError,
    ChecksumError,
    PublishedWeights,
    UnsupportedArchitectureError,
    WeightsDownloadError,
    default_cache_dir,
    download_weights,
    infer_architecture,
    load_checkpoint,
    load_model,
    load_state_dict_file,
    resolve_model,
)
from aletheia.models.efficientnet import EfficientNetLite0
from aletheia.models.registry import create_model, list_models


@pytest.fixture(scope="module")
def state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    """A state dict of every registered architecture (random init; built once)."""
    return {name: create_model(name, **_no_imagenet(name)).state_dict() for name in list_models()}


def _no_imagenet(name: str) -> dict[str, bool]:
    return {"pretrained": False} if "Lite" in name else {}


@pytest.fixture(scope="module")
def lite_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return EfficientNetLite0(pretrained=False).state_dict()


def assert_same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --- reading and loading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="bare"),
        pytest.param(
            lambda s: {"net": s, "opt": {"state": {}, "param_groups": []}, "epoch": 3, "val_loss": 0.2},
            id="net",
        ),
        pytest.param(lambda s: {"model": s}, id="model"),
        pytest.param(lambda s: {"state_dict": s, "epoch": 1}, id="state_dict"),
        pytest.param(lambda s: {f"module.{k}": v for k, v in s.items()}, id="module-prefix"),
        pytest.param(lambda s: {"net": {f"module.{k}": v for k, v in s.items()}}, id="net+module-prefix"),
    ],
)
def test_round_trip(wrap, lite_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save(wrap(lite_state), path)
    assert load_state_dict_file(path).keys() == lite_state.keys()
    assert_same_weights(load_checkpoint(EfficientNetLite0(pretrained=False), path), lite_state)
    assert_same_weights(load_checkpoint(EfficientNetLite0(pretrained=False), wrap(lite_state)), lite_state)


def test_missing_and_unexpected_keys_are_named(state_dicts, tmp_path: Path) -> None:
    path = tmp_path / "autoatt.pth"
    torch.save({"net": state_dicts["EfficientNetAutoAttLite0"]}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(EfficientNetLite0(pretrained=False), path)
    message = str(info.value)
    assert str(path) in message and "EfficientNetLite0" in message
    assert "2 unexpected keys" in message and "efficientnet.attconv.weight" in message
    assert "looks like a EfficientNetAutoAttLite0 checkpoint" in message

    with pytest.raises(CheckpointError, match=r"2 missing keys \(efficientnet\.attconv\.weight"):
        load_checkpoint(
            create_model("EfficientNetAutoAttLite0", pretrained=False), state_dicts["EfficientNetLite0"]
        )


def test_many_missing_keys_are_counted_not_all_listed(state_dicts) -> None:
    partial_state = dict(list(state_dicts["EfficientNetLite0"].items())[:10])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(EfficientNetLite0(pretrained=False), partial_state, source="half.pth")
    message = str(info.value)
    assert message.startswith("half.pth does not fit EfficientNetLite0: 286 missing keys (")
    assert "283 more" in message and len(message) < 500


def test_shape_mismatch_is_named(lite_state) -> None:
    bad = dict(lite_state, **{"classifier.weight": torch.zeros(2, 1280)})
    with pytest.raises(CheckpointError, match=r"classifier\.weight \[2, 1280\] vs \[1, 1280\]"):
        load_checkpoint(EfficientNetLite0(pretrained=False), bad)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(b"not a checkpoint", "cannot read checkpoint", id="garbage"),
        pytest.param([1, 2, 3], "expected a state dict", id="list"),
        pytest.param({"epoch": 3, "lr": 0.1}, "no state dict found", id="no-tensors"),
        pytest.param(nn.Linear(2, 1), "cannot read checkpoint", id="pickled-module-refused"),
    ],
)
def test_unreadable_checkpoints(content, match: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_file(tmp_path / "missing.pth")


# --- architecture inference -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_infer_architecture(name: str, state_dicts) -> None:
    state = state_dicts[name]
    assert infer_architecture(state) == name
    assert infer_architecture({f"module.{k}": v for k, v in state.items()}) == name


def test_infer_architecture_rejects_xception() -> None:
    xception = {
        "xception.conv1.weight": torch.zeros(32, 3, 3, 3),
        "xception.last_linear.weight": torch.zeros(1, 2048),
    }
    with pytest.raises(UnsupportedArchitectureError, match="Xception is not supported yet"):
        infer_architecture(xception)
    siamese = {f"feat_ext.{k}": v for k, v in xception.items()} | {
        "classifier.0.running_mean": torch.zeros(2048)
    }
    with pytest.raises(UnsupportedArchitectureError):
        infer_architecture(siamese)


def test_infer_architecture_rejects_unknown(state_dicts) -> None:
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        infer_architecture({"fc.weight": torch.zeros(1, 4)})
    truncated = {k: v for k, v in state_dicts["EfficientNetB4"].items() if "_blocks.31." not in k}
    with pytest.raises(CheckpointError, match="31 blocks, 1792 head channels"):
        infer_architecture(truncated)


# --- published weights table -----------------------------------------------------------------------------------------


def test_published_weights_table() -> None:
    assert len(PUBLISHED_WEIGHTS) == 10
    for name, entry in PUBLISHED_WEIGHTS.items():
        assert entry.name == name
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert entry.url.startswith(ISPL_BASE_URL) and f"-{entry.sha256}.pth" in entry.url
        assert entry.architecture in list_models() or entry.architecture == "Xception"
        assert name.endswith(("_DFDC", "_FFPP")) and entry.dataset and "GPL" in entry.licence
    assert {e.architecture for e in PUBLISHED_WEIGHTS.values()} == {
        "EfficientNetB4",
        "EfficientNetB4ST",
        "EfficientNetAutoAttB4",
        "EfficientNetAutoAttB4ST",
        "Xception",
    }


# --- downloads against a local server ------------------------------------------------------------------------------


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def publish(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(root)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_caches_and_reuses(server: _Server, tmp_path: Path) -> None:
    url = server.publish(f"weights-{PAYLOAD_SHA}.pth", PAYLOAD)
    cache = tmp_path / "cache"
    path = download_weights(url, cache_dir=cache, progress=False)
    assert path == cache / f"weights-{PAYLOAD_SHA}.pth"
    assert path.read_bytes() == PAYLOAD
    assert list(cache.iterdir()) == [path]  # no temporary file left
    assert len(server.requests) == 1

    assert download_weights(url, cache_dir=cache, progress=False) == path
    assert len(server.requests) == 1  # served from the cache

    path.write_bytes(b"corrupted")  # a damaged cache entry is fetched again
    assert download_weights(url, cache_dir=cache, progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_download_accepts_hash_prefix_and_explicit_hash(server: _Server, tmp_path: Path) -> None:
    url = server.publish(f"short-{PAYLOAD_SHA[:8]}.pth", PAYLOAD)
    assert download_weights(url, cache_dir=tmp_path / "a", progress=False).read_bytes() == PAYLOAD
    url = server.publish("plain.pth", PAYLOAD)
    path = download_weights(
        url, cache_dir=tmp_path / "b", expected_sha256=PAYLOAD_SHA.upper(), progress=False
    )
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    url = server.publish("weights.pth", PAYLOAD)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        download_weights(url, cache_dir=cache, expected_sha256="0" * 64, progress=False)
    assert info.value.expected == "0" * 64 and info.value.got == PAYLOAD_SHA
    assert "0" * 64 in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert list(cache.iterdir()) == []


def test_http_404_is_a_clear_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(WeightsDownloadError, match=r"HTTP 404") as info:
        download_weights(f"{server.url}/nope-{PAYLOAD_SHA}.pth", cache_dir=tmp_path / "cache", progress=False)
    assert "nope-" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_server_names_the_cache_path(tmp_path: Path) -> None:
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port any more
    with pytest.raises(WeightsDownloadError, match="put the file at"):
        download_weights(f"http://127.0.0.1:{port}/w-{PAYLOAD_SHA}.pth", cache_dir=tmp_path, progress=False)


def test_download_refuses_unverifiable_or_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected_sha256"):
        download_weights("http://127.0.0.1:9/weights.pth", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="EfficientNetAutoAttB4_DFDC"):
        download_weights("NoSuchWeights", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="hex digits"):
        download_weights(
            "http://127.0.0.1:9/w.pth", cache_dir=tmp_path, expected_sha256="xyz", progress=False
        )


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALETHEIA_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("ALETHEIA_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "aletheia" / "weights"


# --- resolve_model / load_model ---------------------------------------------------------------------------------------


def test_resolve_registry_name_and_file(state_dicts, tmp_path: Path) -> None:
    assert resolve_model("EfficientNetAutoAttB4") == ("EfficientNetAutoAttB4", None)
    path = tmp_path / "trained.pth"
    torch.save({"net": state_dicts["EfficientNetAutoAttLite0"]}, path)
    name, state = resolve_model(str(path))
    assert name == "EfficientNetAutoAttLite0" and state is not None and len(state) == 298
    model = load_model(str(path))
    assert not model.training and model.config.name == "EfficientNetAutoAttLite0"
    assert_same_weights(model, state_dicts["EfficientNetAutoAttLite0"])


def test_resolve_unknown_spec_lists_choices() -> None:
    with pytest.raises(ValueError) as info:
        resolve_model("no/such/thing.pth")
    assert "EfficientNetAutoAttB4" in str(info.value) and "EfficientNetAutoAttB4_FFPP" in str(info.value)


def test_resolve_xception_fails_before_downloading(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError, match="Xception"):
        resolve_model("Xception_DFDC", cache_dir=tmp_path, base_url="http://127.0.0.1:9")
    assert not any(tmp_path.iterdir())


def test_resolve_published_name_downloads_and_loads(
    server: _Server, lite_state, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "trained.pth"
    torch.save({"net": lite_state, "epoch": 7}, source)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = PublishedWeights(
        name="EfficientNetLite0_TEST",
        architecture="EfficientNetLite0",
        filename=f"EfficientNetLite0_TEST-{sha}.pth",
        sha256=sha,
        dataset="test",
        licence="test",
    )
    monkeypatch.setitem(checkpoints.PUBLISHED_WEIGHTS, entry.name, entry)
    server.publish(entry.filename, source.read_bytes())

    name, state = resolve_model(
        entry.name, cache_dir=tmp_path / "cache", base_url=server.url + "/", progress=False
    )
    assert name == "EfficientNetLite0" and state is not None
    assert server.requests == [f"/{entry.filename}"]
    model = load_model(entry.name, cache_dir=tmp_path / "cache", base_url=server.url, progress=False)
    assert len(server.requests) == 1  # second time from the cache
    assert_same_weights(model, lite_state)

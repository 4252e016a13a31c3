from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orch import config
from orch.errors import InvalidInput, OrchError


def test_defaults_come_from_home(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'orch.db'}"
    assert cfg.port == 8750 and cfg.url == "" and cfg.token == ""


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    config.write_file(tmp_path / "config.toml", {"url": "http://file", "port": 9000})
    cfg = config.load(tmp_path, environ={"ORCH_URL": "http://env"})
    assert cfg.url == "http://env"
    assert cfg.port == 9000
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600


def test_orch_home_from_environment(tmp_path: Path) -> None:
    cfg = config.load(environ={"ORCH_HOME": str(tmp_path)})
    assert cfg.home == tmp_path.resolve()


def test_write_merges_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config.write_file(path, {"url": "http://a"})
    config.write_file(path, {"token": 'we"ird\\'})
    assert config.read_file(path) == {"url": "http://a", "token": 'we"ird\\'}


def test_bad_values_are_plain_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="ORCH_BUILD_TIMEOUT"):
        config.load(tmp_path, environ={"ORCH_BUILD_TIMEOUT": "soon"})
    (tmp_path / "config.toml").write_text("url = [unclosed")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        config.load(tmp_path, environ={})


def test_a_bad_value_says_what_the_setting_takes(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={"ORCH_RUN_WORKERS": "0"})
    assert "run_workers = '0' (from ORCH_RUN_WORKERS)" in e.value.message
    assert e.value.fix == "Set ORCH_RUN_WORKERS to a whole number of 1 to 1024, or unset it for the default."


@pytest.mark.parametrize(
    ("line", "form"),
    [
        ("run_workers = 0", "a whole number of 1 to 1024"),  # a TOML number is checked too
        ("warm_sandboxes = -1", "a whole number of 0 or more"),
        ("port = 70000", "a port number from 0 to 65535"),
        ("services_port = true", "a port number"),
        ("build_timeout = 1.5", "a whole number of 1 or more"),
        ('pass_proxy = "flase"', "true or false"),  # a typo is not a no
        ('isolation = "kata"', "runc or gvisor"),
        ('run_memory = "lots"', "a size of 16Mi or more"),
        ("run_memory = 1024", "a size of 16Mi or more"),  # bytes: less than a sandbox's least
        ("build_pids = 99999999999", "a whole number of 1 to 4194304"),
    ],
)
def test_a_config_files_value_is_checked_as_the_environments(tmp_path: Path, line: str, form: str) -> None:
    (tmp_path / "config.toml").write_text(line + "\n")
    name = line.split(" ")[0]
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={})
    assert f"Setting {name} = " in e.value.message and str(tmp_path / "config.toml") in e.value.message
    assert e.value.fix.startswith(f"Give {name} in {tmp_path / 'config.toml'} {form}")


def test_a_config_files_booleans_numbers_and_lists_are_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "port = 0\nrun_workers = 3\npass_proxy = false\nregistry_tls_verify = true\n"
        'model_endpoints = ["http://127.0.0.1:11434/v1", "https://api.anthropic.com"]\n'
    )
    cfg = config.load(tmp_path, environ={})
    assert (cfg.port, cfg.run_workers, cfg.pass_proxy, cfg.registry_tls_verify) == (0, 3, False, True)
    assert cfg.model_endpoints == ("http://127.0.0.1:11434/v1", "https://api.anthropic.com")


def test_run_memory_is_a_size_and_half_the_machines_memory_by_default(tmp_path: Path) -> None:
    assert config.load(tmp_path, environ={}).run_memory == config.memory() // 2
    assert config.load(tmp_path, environ={"ORCH_RUN_MEMORY": "12Gi"}).run_memory == 12 * 2**30
    (tmp_path / "config.toml").write_text('run_memory = "1.5G"\n')
    assert config.load(tmp_path, environ={}).run_memory == 1_500_000_000


def test_a_config_files_unknown_setting_is_refused_with_the_nearest(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("run_worker = 8\n")
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={})
    assert "sets run_worker, which orch has no setting for" in e.value.message
    assert e.value.fix.startswith("Did you mean run_workers?")


def test_every_way_of_parsing_says_what_it_takes() -> None:
    for s in config.SETTINGS:
        assert s.parse in config._FORMS, f"{s.name}: its parse has no entry in _FORMS"


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for s in config.SETTINGS:
        assert f"`{s.env}`" in doc, f"{s.env} is missing from docs/configuration.md"


def test_a_home_orch_makes_is_its_owners_alone_and_the_config_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH_HOME holds the store, the secrets' key and tokens: made 700 (it was 755 under the
    usual umask). The config file is 600 from its first byte: a write then chmod left a window,
    and a temporary file a kill left behind kept its mode."""
    old = os.umask(0o022)
    try:
        home = tmp_path / "new" / "home"
        (home.parent).mkdir()
        home.mkdir()
        (home / "config.tmp").write_text("stale")
        (home / "config.tmp").chmod(0o644)
        config.write_file(home / "config.toml", {"token": "t"})
        assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
        assert not (home / "config.tmp").exists()
        fresh = tmp_path / "fresh" / "orch"
        config.write_file(fresh / "config.toml", {"token": "t"})  # `orch login` may make the home
        assert fresh.stat().st_mode & 0o777 == 0o700
        config.make_home(home)  # a home that exists keeps its mode
        assert home.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("variable", "value", "form"),
    [
        # each a thread of the server's: 100000 of them took the machine's threads, then a traceback
        ("ORCH_RUN_WORKERS", "99999999999999999999", "a whole number of 1 to 1024"),
        ("ORCH_BUILD_WORKERS", "1025", "a whole number of 1 to 1024"),
        # written to the build's pids.max, which takes at most PID_MAX_LIMIT: the server started,
        # then every build and service deploy failed, sending the operator to scripts/setup
        ("ORCH_BUILD_PIDS", "99999999999", "a whole number of 1 to 4194304"),
        ("ORCH_BUILD_PIDS", "4194305", "a whole number of 1 to 4194304"),
        # memory limits given to podman and the OCI runtime, which read them as int64s
        ("ORCH_BUILD_MEMORY", "9999999Ti", "a size of 16Mi or more, below 8 EiB"),
        ("ORCH_INSTALL_MEMORY", str(2**63), "a size of 16Mi or more, below 8 EiB"),
        # a server with this cluster started, and its runs waited queued without a word
        ("ORCH_CLUSTER", "nonsense", "HOST:PORT of the Ray cluster's head"),
        ("ORCH_CLUSTER", "head.example:99999", "HOST:PORT of the Ray cluster's head"),
        ("ORCH_CLUSTER", "http://head:6379", "HOST:PORT of the Ray cluster's head"),
        # a typo dropped the bundle without a word: certificate errors later, far from the cause
        ("ORCH_CA_BUNDLE", "/nonexistent/ca.crt", "the path of an existing file"),
        ("ORCH_CA_BUNDLE", "/etc", "the path of an existing file"),
        # no client can send it as `Authorization: Bearer ...`
        ("ORCH_METRICS_TOKEN", " spaced ", "printable ASCII without spaces"),
        # taken, then refused at the first push
        ("ORCH_REGISTRY", "127.0.0.1:99999", "HOST[:PORT][/PATH] with no scheme"),
        ("ORCH_REGISTRY", "127.0.0.1:0/orch", "HOST[:PORT][/PATH] with no scheme"),
        # taken, then printed as every service's address
        ("ORCH_SERVICES_URL", "http://x y", "one http(s) URL with no path"),
        # taken, then printed as every service's address: no client reaches it, or the
        # credentials shown in every service's URL (found by a tester)
        ("ORCH_SERVICES_URL", "http://x:abc", "one http(s) URL with no path, a port of 1 to 65535"),
        ("ORCH_SERVICES_URL", "http://x:99999", "one http(s) URL with no path, a port of 1 to 65535"),
        ("ORCH_SERVICES_URL", "http://x:0", "one http(s) URL with no path, a port of 1 to 65535"),
        ("ORCH_SERVICES_URL", "http://user:pw@x", "one http(s) URL with no path, a port of 1 to 65535"),
        ("ORCH_MODEL_ENDPOINTS", "http://a.example:abc/v1", "http(s) URLs, comma-separated"),
        ("ORCH_MODEL_ENDPOINTS", "http://key@a.example/v1", "http(s) URLs, comma-separated"),
        ("ORCH_MODEL_ENDPOINTS", "http://a.example/v1,http://b\texample/v1", "http(s) URLs, comma-separated"),
    ],
)
def test_settings_that_could_not_work_are_refused(
    tmp_path: Path, variable: str, value: str, form: str
) -> None:
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={variable: value})
    assert e.value.fix.startswith(f"Set {variable} to {form}"), e.value.fix


def test_settings_of_those_forms_are_taken(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("")
    cfg = config.load(
        tmp_path,
        environ={
            "ORCH_RUN_WORKERS": "1024",
            "ORCH_BUILD_PIDS": "4194304",
            "ORCH_BUILD_MEMORY": f"{2**63 - 1}",
            "ORCH_CLUSTER": " [::1]:6379 ",
            "ORCH_CA_BUNDLE": str(bundle),
            "ORCH_METRICS_TOKEN": "scrape-secret_1",
            "ORCH_SERVICES_URL": "https://services.example.com:8443",
        },
    )
    assert cfg.services_url == "https://services.example.com:8443"
    assert (cfg.build_pids, cfg.build_memory) == (4194304, 2**63 - 1)
    assert (cfg.run_workers, cfg.cluster, cfg.ca_bundle, cfg.metrics_token) == (
        1024,
        "[::1]:6379",
        str(bundle),
        "scrape-secret_1",
    )
    assert (
        config.load(tmp_path, environ={"ORCH_CLUSTER": "head.example.com:6379"}).cluster
        == "head.example.com:6379"
    )


def test_a_list_for_a_setting_of_one_value_is_refused(tmp_path: Path) -> None:
    """`url = ["http://a", "http://b"]` was joined into one address, http://a,http://b."""
    (tmp_path / "config.toml").write_text('url = ["http://a", "http://b"]\n')
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={})
    assert e.value.message == f"Setting url in {tmp_path / 'config.toml'} is a list; it takes one value."


def test_a_full_disk_under_the_home_is_said_with_its_fix_and_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orch server` on a full ORCH_HOME said "orch failed unexpectedly (OSError: [Errno 28] ...)
    This is a bug" and left a config.tmp (found by a tester). The write goes to /dev/full here,
    which answers every write ENOSPC, as a full disk does."""
    path = tmp_path / "config.toml"
    config.write_file(path, {"url": "http://a"})
    before = path.read_bytes()
    real_open = os.open

    def full(file: Any, flags: int, mode: int = 0o777) -> int:
        fd = real_open(file, flags, mode)  # made, as on a full disk: its first write fails
        os.close(fd)
        return real_open("/dev/full", os.O_WRONLY)

    monkeypatch.setattr(config.os, "open", full)
    with pytest.raises(OrchError) as raised:
        config.write_file(path, {"token": "t" * 10_000})
    assert raised.value.message == f"The disk under {tmp_path} is full: orch cannot write config.toml there."
    assert "Free space" in raised.value.fix
    assert path.read_bytes() == before and not (tmp_path / "config.tmp").exists()

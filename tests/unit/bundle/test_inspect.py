"""What the server learns from a bundle before accepting it."""

from __future__ import annotations

import hashlib

import pytest

from orch.bundle import Entrypoint, Language, Manifest, inspect_bundle
from orch.errors import InvalidInput
from tests.unit.bundle.support import bundle, file, link

LOCK = b'{"lockfileVersion": 3}'


def test_everything_a_publish_needs() -> None:
    data = bundle(
        file("orch.yaml", b"name: summarizer\nresources: {memory: 1Gi}\n"),
        file("index.js", b"console.log(1)"),
        file("package.json", b'{"name": "s", "main": "index.js"}'),
        file("package-lock.json", LOCK),
        file("requirements.txt", b"requests\n"),
        file("Dockerfile", b"\xef\xbb\xbfFROM e2bdev/code-interpreter:latest\n"),
        file("sub/Dockerfile", b"FROM elsewhere\n"),
    )
    info = inspect_bundle(data)
    assert info.data == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.manifest.name == "summarizer" and info.manifest.resources.memory_bytes == 1024**3
    assert info.entrypoint == Entrypoint("index.js", Language.NODE, ("node", "index.js"))
    assert info.dockerfile == "FROM e2bdev/code-interpreter:latest\n"  # without the BOM
    assert info.requirements == b"requests\n"
    assert info.package_json == b'{"name": "s", "main": "index.js"}'
    assert info.package_lock == LOCK
    assert set(info.files) == {
        "orch.yaml",
        "index.js",
        "package.json",
        "package-lock.json",
        "requirements.txt",
        "Dockerfile",
        "sub/Dockerfile",
    }


def test_build_files_count_only_at_the_top() -> None:
    info = inspect_bundle(bundle(file("main.py"), file("sub/Dockerfile"), file("sub/requirements.txt")))
    assert (info.dockerfile, info.requirements, info.package_json, info.package_lock) == (None,) * 4
    assert info.manifest == Manifest()


def test_orch_yml_is_read_too() -> None:
    info = inspect_bundle(bundle(file("orch.yml", b"entrypoint: bot.py\n"), file("bot.py"), file("main.py")))
    assert info.entrypoint.path == "bot.py"


def test_both_manifest_names_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"both orch\.yaml and orch\.yml"):
        inspect_bundle(bundle(file("main.py"), file("orch.yaml", b""), file("orch.yml", b"")))


def test_manifest_problem_names_the_file_it_is_in() -> None:
    with pytest.raises(InvalidInput) as caught:
        inspect_bundle(bundle(file("main.py"), file("orch.yml", b"name: x\nnetwork: sometimes\n")))
    assert caught.value.message == "orch.yml line 2: network: 'sometimes' is not true or false."


@pytest.mark.parametrize("name", ["orch.yaml", "Dockerfile"])
def test_text_files_must_be_utf8(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        inspect_bundle(bundle(file("main.py"), file(name, b"name: caf\xe9\n")))
    assert caught.value.message == f"{name} is not UTF-8 text (byte 9)."


def test_entrypoint_may_be_a_link() -> None:
    info = inspect_bundle(bundle(file("src/main.py", b"print()"), link("main.py", "src/main.py")))
    assert info.entrypoint.path == "main.py" and info.files["main.py"] == b"print()"


def test_bundle_without_entrypoint_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"No entrypoint found: .*\(its files: README.md\)"):
        inspect_bundle(bundle(file("README.md")))


def test_unsafe_bundle_is_refused_before_anything_is_parsed() -> None:
    with pytest.raises(InvalidInput, match="climbs out"):
        inspect_bundle(bundle(file("orch.yaml", b"{{{"), file("../x")))


def test_limits_are_passed_on() -> None:
    with pytest.raises(InvalidInput, match="more than 1 entries"):
        inspect_bundle(bundle(file("main.py"), file("b.py")), max_files=1)

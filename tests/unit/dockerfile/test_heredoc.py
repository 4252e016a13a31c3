"""Heredoc RUNs rendered as plain RUNs do what the heredoc does: checked by running both with sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dockerfile
import pytest

from orch.dockerfile import render_containerfile, validate
from orch.dockerfile.heredoc import heredoc_argv
from tests.unit.dockerfile.support import BASE

SH = ("/bin/sh", "-c")


def run_rendered(run_text: str, cwd: Path) -> None:
    """Render `RUN ...` (with its heredoc lines) and run the result the way Podman would."""
    v = validate(BASE + run_text)
    assert v.ok, v.findings
    containerfile = render_containerfile(v.instructions, "localhost/base:1")
    [_, run] = dockerfile.parse_string(containerfile)
    argv = list(run.value) if run.json else [*SH, run.value[0]]
    subprocess.run(argv, cwd=cwd, check=True, env={**os.environ, "GREETING": "hello"})


def run_sh(script: str, cwd: Path) -> None:
    subprocess.run([*SH, script], cwd=cwd, check=True, env={**os.environ, "GREETING": "hello"})


def files(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


@pytest.mark.parametrize(
    "script",
    [
        "cat <<EOF > out.txt\n$GREETING $(echo world)\n  indented 'single' \"double\" \\\\ back\nEOF\n",
        "cat <<'EOF' > out.txt\n$GREETING stays literal \\n\nEOF\n",
        'cat <<"EOF" > out.txt\n$GREETING stays literal\nEOF\n',
        "cat <<-EOF > out.txt\n\t\ttabs go\n\tEOF\n",
        "cat <<A > a.txt && cat <<B > b.txt\naa $GREETING\nA\nbb\nB\n",
        "<<EOF cat > out.txt\nredirection first\nEOF\n",
        "python3 - <<EOF > out.txt\nprint(6 * 7)\nEOF\n",
    ],
)
def test_heredoc_feeding_a_command_matches_sh(script: str, tmp_path: Path) -> None:
    assert shutil.which("python3"), "these tests run heredocs through python3, which must be on PATH"
    mine, real = tmp_path / "rendered", tmp_path / "sh"
    mine.mkdir()
    real.mkdir()
    run_rendered("RUN " + script, mine)
    run_sh(script, real)  # what sh makes of the very lines the user wrote after RUN
    assert files(mine) == files(real)
    assert files(mine)


def test_lone_heredoc_runs_its_body_as_a_script(tmp_path: Path) -> None:
    body = 'set -e\nx="$GREETING there"\necho "$x" > out.txt\nfor i in 1 2; do echo $i >> out.txt; done\n'
    mine, real = tmp_path / "rendered", tmp_path / "sh"
    mine.mkdir()
    real.mkdir()
    run_rendered("RUN <<EOF\n" + body + "EOF\n", mine)
    subprocess.run(
        ["/bin/sh", "-s"],
        input=body,
        text=True,
        cwd=real,
        check=True,
        env={**os.environ, "GREETING": "hello"},
    )
    assert files(mine) == files(real) == {"out.txt": "hello there\n1\n2\n"}


def test_lone_chomped_heredoc_loses_leading_tabs(tmp_path: Path) -> None:
    run_rendered("RUN <<-EOF\n\tif true; then\n\t\techo ok > out.txt\n\tfi\n\tEOF\n", tmp_path)
    assert files(tmp_path) == {"out.txt": "ok\n"}


def test_shebang_heredoc_runs_as_an_executable_file(tmp_path: Path) -> None:
    body = '#!/bin/sh\necho "$(basename "$0") $GREETING" > out.txt\n'
    run_rendered("RUN <<SETUP\n" + body + "SETUP\n", tmp_path)
    # BuildKit names the file after the delimiter (/dev/pipes/SETUP); so does the rendering.
    assert files(tmp_path) == {"out.txt": "SETUP hello\n"}


def test_python_shebang_and_a_body_longer_than_one_argument(tmp_path: Path) -> None:
    python = shutil.which("python3")
    assert python, "these tests run heredocs through python3, which must be on PATH"
    lines = "".join(f"total += {i}  # {'é' * 40}\n" for i in range(3000))
    body = f"#!{python}\ntotal = 0\n{lines}open('out.txt', 'w').write(str(total))\n"
    assert len(body.encode()) > 131072  # more than one argv string may hold
    run_rendered("RUN <<EOF\n" + body + "EOF\n", tmp_path)
    assert files(tmp_path) == {"out.txt": str(sum(range(3000)))}


def test_shebang_temp_file_is_removed_and_exit_status_kept(tmp_path: Path) -> None:
    argv = heredoc_argv("<<EOF", [("EOF", "#!/bin/sh\nexit 3\n")], SH)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    assert subprocess.run(argv, env=env, check=False).returncode == 3
    assert list(tmp_path.iterdir()) == []


def test_argv_follows_buildkit() -> None:
    assert heredoc_argv("<<EOF", [("EOF", "echo a\n")], SH) == [*SH, "echo a\n"]
    assert heredoc_argv("3<<EOF", [("EOF", "echo a\n")], SH) == [*SH, "echo a\n"]
    assert heredoc_argv("<<-EOF", [("EOF", "\techo a\n\t\tb\n")], SH) == [*SH, "echo a\nb\n"]
    assert heredoc_argv("<<EOF bash", [("EOF", "echo a\n")], SH) == [*SH, "<<EOF bash\necho a\nEOF"]
    assert heredoc_argv("cat <<A <<B", [("A", "1\n"), ("B", "2\n")], ["/bin/bash", "-c"]) == [
        "/bin/bash",
        "-c",
        "cat <<A <<B\n1\nA\n2\nB",
    ]
    shebang = heredoc_argv('<<"my script"', [("my script", "#!/bin/sh\n")], SH)
    assert shebang[:2] == ["/bin/sh", "-c"] and '"$d/my_script"' in shebang[2]
    assert shebang[3:] == ["sh", "#!/bin/sh\n"]


def test_shebang_script_has_mode_755(tmp_path: Path) -> None:
    marker = tmp_path / "mode.txt"
    body = f'#!/bin/sh\nstat -c %a "$0" > {marker}\n'
    subprocess.run(heredoc_argv("<<EOF", [("EOF", body)], SH), check=True)
    assert marker.read_text().strip() == "755"

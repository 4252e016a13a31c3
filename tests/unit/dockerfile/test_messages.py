"""The findings real Dockerfiles hit most, and what they tell the user to do instead."""

from __future__ import annotations

import pytest

from orch.dockerfile import validate
from tests.unit.dockerfile.support import BASE, errors, where


@pytest.mark.parametrize("image", ["node:20-bookworm", "ubuntu:22.04", "python:3.11-slim", "e2bdev/base"])
def test_a_foreign_base_says_what_the_allowed_one_already_holds(image: str) -> None:
    [finding] = errors(validate(f"FROM {image}\nRUN pip install numpy && npm install -g tsx\n"))
    assert (finding.line, finding.instruction) == (1, "FROM")
    assert image in finding.message
    for tool in ("Python 3.11", "pip", "uv", "Node.js 20", "npm", "git", "curl"):
        assert tool in finding.message
    assert "FROM e2bdev/code-interpreter:latest" in finding.fix and "can stay" in finding.fix


@pytest.mark.parametrize(
    "image", ["e2bdev/code-interpreter:v1.2", "docker.io/e2bdev/code-interpreter@sha256:ab"]
)
def test_another_tag_of_the_base_says_only_latest_exists(image: str) -> None:
    [finding] = errors(validate(f"FROM {image}\n"))
    assert "only e2bdev/code-interpreter:latest" in finding.message


@pytest.mark.parametrize(
    ("copy", "install"),
    [
        ("COPY requirements.txt /tmp/", "RUN pip install -r /tmp/requirements.txt"),
        ("COPY requirements.txt .", "RUN uv pip install --system -r requirements.txt"),
        ("COPY package.json package-lock.json ./", "RUN npm ci"),
        ("COPY ./package.json /app/", "RUN cd /app && npm install"),
    ],
)
def test_copying_dependency_files_to_install_them_is_not_needed(copy: str, install: str) -> None:
    v = validate(BASE + copy + "\nWORKDIR /app\n" + install + "\n")
    [finding] = errors(v)
    assert (finding.line, finding.instruction) == (2, "COPY")
    assert "no build context" in finding.message
    assert "line 4" in finding.fix and "installed for each run automatically" in finding.fix


@pytest.mark.parametrize(
    ("copy", "install"),
    [
        ("COPY requirements-dev.txt /tmp/", "RUN pip install -r /tmp/requirements-dev.txt"),
        ("COPY . /app", "RUN pip install -r /app/requirements.txt"),
        ("COPY requirements.txt /tmp/", "RUN echo no install"),
    ],
)
def test_copying_other_files_gets_the_general_advice(copy: str, install: str) -> None:
    [finding] = errors(validate(BASE + copy + "\n" + install + "\n"))
    assert "pip or apt-get" in finding.fix and "bundle" in finding.fix


def test_a_copy_heredoc_is_written_in_a_run_instead() -> None:
    [finding] = errors(validate(BASE + "COPY <<EOF /etc/motd\nhello\nEOF\n"))
    assert (finding.line, finding.instruction) == (2, "COPY")
    assert "heredoc" in finding.message
    assert "RUN cat <<EOF > /etc/motd" in finding.fix


@pytest.mark.parametrize(
    ("add", "fix"),
    [
        (
            "ADD https://example.org/tool.tgz /opt/",
            "RUN curl -fsSL --create-dirs -o /opt/tool.tgz https://example.org/tool.tgz",
        ),
        ("ADD https://example.org/a.sh /usr/local/bin/a", "-o /usr/local/bin/a https://example.org/a.sh"),
        ("ADD https://github.com/org/repo.git /src", "RUN git clone https://github.com/org/repo.git /src"),
    ],
)
def test_add_of_a_url_is_a_download_in_a_run(add: str, fix: str) -> None:
    [finding] = errors(validate(BASE + add + "\n"))
    assert (finding.line, finding.instruction) == (2, "ADD")
    assert fix in finding.fix


SPACED = BASE + (
    "RUN cat << 'EOF' > /etc/app.conf\n[server]\nport = 8080\nhost = 0.0.0.0\nEOF\nRUN echo done\n"
)


def test_a_heredoc_with_a_space_is_one_finding_at_its_run() -> None:
    v = validate(SPACED)
    [finding] = v.findings
    assert (finding.line, finding.instruction) == (2, "RUN")
    assert "<< 'EOF'" in finding.message and "lines 3-6" in finding.message
    assert "<<'EOF'" in finding.fix


def test_a_heredoc_with_a_space_whose_body_fails_to_parse() -> None:
    # The body line "ENV" alone makes the whole parse fail; the finding is still at the RUN.
    [finding] = validate(BASE + "RUN cat <<- EOF > /x\nENV\n\tEOF\n").findings
    assert (finding.line, finding.instruction) == (2, "RUN")
    assert "<<-EOF" in finding.fix


def test_other_findings_stay() -> None:
    v = validate(SPACED + "EXPOSE 80\n")
    assert where(errors(v)) == [(2, "RUN"), (8, "EXPOSE")]


def test_a_spaced_heredoc_whose_lines_read_as_instructions_is_left_alone() -> None:
    assert validate(BASE + "RUN cat << RUN\nRUN true\n").ok


def test_a_real_heredoc_is_not_mistaken_for_one() -> None:
    assert validate(BASE + "RUN cat <<'EOF' > /x\n[a]\nEOF\n").ok

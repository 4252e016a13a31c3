"""Current Node.js tooling end to end: the bases' Node satisfies today's npm packages (issue 10).

Vite 8 and rolldown need Node ^20.19.0 || >=22.12.0. On an older Node, npm skips rolldown's
native binding with only an EBADENGINE warning, the build says "ready", and the first run of
`vite` fails ("Cannot find native binding"); so this test builds with current Vite and runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.builder import base_images
from tests.integration.conftest import Server
from tests.integration.test_runs import run_json, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE = f"v{base_images.NODE_VERSION}"
VITE = "8.4.0"  # needs ^20.19.0 || >=22.12.0, and builds with rolldown's native binding

# Prints the versions the agent sees: `node --version` and npm's, each as its own process.
VERSIONS_JS = """
const { execFileSync } = require('node:child_process');
const run = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
console.log(JSON.stringify({ node: run('node', '--version'), npm: run('npm', '--version') }));
"""

# Runs the globally installed Vite: its version, then a production build of a small project
# (bundling is rolldown's native code), and reports what the build wrote.
VITE_AGENT_JS = """
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const run = (cmd, ...args) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();
const version = run('vite', '--version');
process.stderr.write(run('vite', 'build', 'site', '--logLevel', 'info') + '\\n');
const assets = fs.readdirSync('site/dist/assets').filter(f => f.endsWith('.js'));
const bundle = fs.readFileSync(path.join('site/dist/assets', assets[0]), 'utf8');
console.log(JSON.stringify({
  node: run('node', '--version'),
  vite: version,
  assets: assets.length,
  greeting: bundle.includes('hello from a module'),
  html: fs.readFileSync('site/dist/index.html', 'utf8').includes('/assets/' + assets[0]),
}));
"""

SITE = {
    "site/index.html": (
        '<!doctype html>\n<html><body><div id="app"></div>'
        '<script type="module" src="/src/main.js"></script></body></html>\n'
    ),
    "site/src/main.js": (
        "import { greet } from './greet.js';\ndocument.querySelector('#app').textContent = greet();\n"
    ),
    "site/src/greet.js": "export const greet = () => 'hello from a module';\n",
}


def test_node_base_has_the_pinned_node(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "versions", {"index.js": VERSIONS_JS})
    assert server.cli("publish", str(tmp_path / "versions"), "--name", "versions").returncode == 0
    r = run_json(server, "versions")
    assert r["status"] == "succeeded", r
    assert r["environment"]["name"] == "node" and r["environment_rule"] == "base"
    assert json.loads(r["stdout"]) == {"node": NODE, "npm": base_images.NPM_VERSION}


def test_current_vite_builds_and_runs_on_code_interpreter(server: Server, tmp_path: Path) -> None:
    dockerfile = (
        f"FROM e2bdev/code-interpreter:latest\nRUN npm install --global --no-fund --no-audit vite@{VITE}\n"
    )
    (tmp_path / "vite" / "site" / "src").mkdir(parents=True)  # write() makes only the top folder
    write(tmp_path / "vite", {"index.js": VITE_AGENT_JS, "Dockerfile": dockerfile, **SITE})
    res = server.cli("publish", str(tmp_path / "vite"), "--name", "viter", "--docker")
    assert res.returncode == 0 and "Environment viter-dockerfile is ready" in res.stdout, (
        res.stdout + res.stderr
    )
    env = json.loads(server.cli("env", "status", "viter-dockerfile", "--json").stdout)
    log = server.get(f"/v1/environments/{env['id']}/logs")["text"]
    # The symptom was a "ready" build whose npm skipped the binding with this warning.
    assert "EBADENGINE" not in log, log

    r = run_json(server, "viter")
    assert r["status"] == "succeeded", r
    assert r["environment"]["name"] == "viter-dockerfile" and r["environment_rule"] == "dockerfile"
    assert json.loads(r["stdout"]) == {
        "node": NODE,
        "vite": f"vite/{VITE} linux-x64 node-{NODE}",
        "assets": 1,
        "greeting": True,
        "html": True,
    }
    assert "built in" in r["stderr"], r["stderr"]

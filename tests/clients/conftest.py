"""Fixtures of the official-SDK suite: one `crmsync sandbox --tls` for the whole run, reset to
its seed before each test, and helpers for the control API and `crmsync sync`.

The binary is $CRMSYNC_BIN (default: target/debug/crmsync of this repository)."""

import json
import os
import pathlib
import socket
import subprocess
import tempfile

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("CRMSYNC_BIN", str(ROOT / "target" / "debug" / "crmsync"))
WORKDIR = pathlib.Path(tempfile.mkdtemp(prefix="crmsync-clients-"))
CA = WORKDIR / "ca.pem"
CA.touch()  # httplib2 checks the file exists when imported; the sandbox writes it at start
# What the clients read to trust the sandbox's CA: requests, httpx/OpenSSL, and httplib2 (which
# reads it when imported, so before the test modules are).
for _var in ("REQUESTS_CA_BUNDLE", "HTTPLIB2_CA_CERTS", "SSL_CERT_FILE"):
    os.environ[_var] = str(CA)


def free_port_base():
    """A port P with P, P+1 and P+2 free (asked of the kernel, then checked)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 65000:
            continue
        socks = []
        try:
            for p in (base, base + 1, base + 2):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no three free ports in a row")


class Sandbox:
    def __init__(self, info, workdir, ca):
        self.info = info
        self.workdir = workdir
        self.ca = ca
        self.config = info["config_file"]
        self.env = dict(os.environ, **info["env"])

    def base(self, service):
        return self.info[service]["base_url"]

    def control(self, service, method, path, body=None, expect=None):
        """Call the control API of one fake; check the status when `expect` is given."""
        r = requests.request(method, f"{self.base(service)}/_crmsync/{path}", json=body, timeout=10)
        if expect is not None:
            assert r.status_code == expect, f"{method} {service} /_crmsync/{path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def requests_log(self, service, **filters):
        q = "&".join(f"{k}={v}" for k, v in filters.items())
        return self.control(service, "GET", f"requests?{q}", expect=200)["requests"]

    def crmsync(self, *args):
        """Run the crmsync binary against the sandbox config; its JSON output when --json."""
        r = subprocess.run([BIN, *args, "--config", self.config], env=self.env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"crmsync {' '.join(args)} exited {r.returncode}: {r.stderr}\n{r.stdout}"
        return json.loads(r.stdout) if "--json" in args else r.stdout


def start_sandbox(workdir, *args, tls=True):
    """Start `crmsync sandbox --json` on free ports with its config in `workdir`: the process and
    its printed description. With `tls` it serves HTTPS and writes its CA to the suite's CA file,
    which every client trusts (so one TLS sandbox at a time)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tls_args = ["--tls", "--ca-out", str(CA)] if tls else []
    proc = subprocess.Popen(
        [BIN, "sandbox", "--json", *tls_args, "--port-base", str(free_port_base()),
         "--config-out", str(workdir / "crmsync.toml"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"crmsync sandbox did not start: {proc.stderr.read()}")
    return proc, Sandbox(json.loads(line), workdir, str(CA))


def stop_sandbox(proc):
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sandbox():
    proc, sb = start_sandbox(WORKDIR, "--contacts", "4", "--events", "2")
    sb.crmsync("connect", "--rep", "gus", "--grant-env", "CRMSYNC_SANDBOX_GOOGLE_GRANT")
    yield sb
    stop_sandbox(proc)


@pytest.fixture(autouse=True)
def fresh(sandbox):
    """Every test starts from the seed, with no faults pending and empty request logs."""
    for service in ("salesforce", "graph", "google"):
        sandbox.control(service, "POST", "reset", expect=200)
    yield sandbox

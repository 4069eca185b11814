"""The scripted endpoint as its own process (`python -m curate.testing`), as the benchmarks run it: it must answer as it
does in-process. (Its answer texts were once defined below the module's main call, so the process answered every
request with a 500.)"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from conftest import REPO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(port: int, deadline: float) -> dict:
    body = {"model": "judge", "messages": [{"role": "user", "content": "How hard is 2 + 2?"}], "max_tokens": 16}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError:
            raise
        except OSError:  # not listening yet
            assert time.monotonic() < deadline, "the endpoint process did not start"
            time.sleep(0.1)


def test_the_endpoint_process_answers_as_the_in_process_one():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "curate.testing", "--port", str(port), "--latency", "0"],
                               cwd=REPO)
    try:
        answer = ask(port, time.monotonic() + 30)
    finally:
        process.terminate()
        process.wait(30)
    assert "<score>" in answer["choices"][0]["message"]["content"]

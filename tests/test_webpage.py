"""``taskstream serve``: the page answers like ``taskstream predict``, refuses bad input clearly, says when a run
is unfinished, is safe under concurrent requests, and works in a real (headless Chromium) browser.

The browser test needs a Chromium binary (``apt-get install chromium``; ``.ci/run`` installs it); without one
it is skipped with a message saying so.
"""

from __future__ import annotations

import html.parser
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from stream.core.scenario import Budget
from stream.engine import cli
from stream.engine.config import MethodSpec, RunConfig
from stream.engine.runner import run_stream
from stream.engine.webpage import MAX_TEXT_CHARS, PageServer, create_app

METHODS = (MethodSpec(name="full"), MethodSpec(name="bitfit"), MethodSpec(name="diff_pruning"),
           MethodSpec(name="masking"))
BUDGET = Budget(max_train_examples=16, epochs=1, batch_size=16, max_eval_examples=8, max_dev_examples=8)


@pytest.fixture(scope="module")
def served_run(tiny_model_dir, glue_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page-run")
    config = RunConfig(tasks=("sst2", "rte"), methods=METHODS, backbone=str(tiny_model_dir),
                       data_dir=str(glue_dir), budget=BUDGET, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stream(config, path, progress=False)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def client(served_run) -> TestClient:
    return TestClient(create_app(PageServer(served_run)))


def cli_predictions(run: Path, task: str, texts: list[str], capsys) -> dict[str, str]:
    """``taskstream predict``'s output line per method label."""
    out = {}
    for spec in METHODS:
        capsys.readouterr()
        assert cli.main(["predict", str(run), "--task", task, "--method", spec.resolved_label, *texts]) == 0
        out[spec.resolved_label] = capsys.readouterr().out.strip()
    return out


def test_answers_equal_predict_and_carry_storage(client, served_run, capsys):
    body = client.get("/api/predict", params={"task": "rte", "text": "the cat sits", "text2": "cat sits"}).json()
    assert body["finished"] is True
    expected = cli_predictions(served_run, "rte", ["the cat sits", "cat sits"], capsys)
    shown = {a["method"]: "\t".join([a["label"]] + [f"{n}={p:.4f}" for n, p in a["probabilities"].items()])
             for a in body["answers"]}
    assert shown == expected
    by_method = {a["method"]: a for a in body["answers"]}
    assert by_method["full"]["times_full"] == 1.0 and by_method["bitfit"]["times_full"] < 0.5
    assert all(a["bytes"] > 0 and a["reference"] == "full" for a in body["answers"])
    page = client.get("/curves")
    assert page.status_code == 200 and "bytes stored so far" in page.text and "unfinished" not in page.text


@pytest.mark.parametrize("params, message", [
    ({"task": "sst2", "text": "   "}, "Type something"),
    ({"task": "sst2", "text": "x" * (MAX_TEXT_CHARS + 1)}, f"at most {MAX_TEXT_CHARS:,}"),
    ({"task": "rte", "text": "only one", "text2": ""}, "text 2 is empty"),
    ({"task": "cola", "text": "good"}, "has no task 'cola'"),
    ({"run": "elsewhere", "task": "sst2", "text": "good"}, "No run 'elsewhere'"),
])
def test_bad_input_is_refused_with_a_clear_message(client, params, message):
    page = client.get("/", params=params)
    assert page.status_code == 400 and message in page.text.replace("&#x27;", "'")
    api = client.get("/api/predict", params=params)
    assert api.status_code == 400 and message in api.json()["error"]


def test_figure_names_come_from_the_folder_listing_only(client):
    assert client.get("/figure/..%2Fconfig.png").status_code == 404
    assert client.get("/figure/storage.png").status_code == 404  # no figures drawn in this run


def test_concurrent_requests_get_the_sequential_answers(client):
    requests = [({"task": "sst2", "text": text}) for text in ("good film", "bad plot", "the music was fun")] * 4
    sequential = [client.get("/api/predict", params=p).json()["answers"] for p in requests]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda p: client.get("/api/predict", params=p).json()["answers"], requests))
    assert concurrent == sequential


def test_an_unfinished_run_says_so(served_run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(served_run, partial)
    ledger = partial / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(line for line in lines if '"step": 2' not in line) + "\n")
    page = TestClient(create_app(PageServer(partial))).get("/", params={"task": "sst2", "text": "good film"})
    assert page.status_code == 200 and "This run is unfinished: 4 of 8 training steps are done" in page.text
    assert 'value="rte"' not in page.text  # a task no method has trained is not offered


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(Exception, match="neither a run directory"):
        PageServer(tmp_path)
    assert cli.main(["serve", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------------------ real browser
def _chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


class _AnswerRows(html.parser.HTMLParser):
    """The answers table's rows as {method: [cell texts]}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._method: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-method" in attrs:
            self._method = attrs["data-method"]
            self.rows[self._method] = []
        elif tag == "td" and self._method is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[self._method].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._method = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=120)


def test_the_page_in_a_real_browser_shows_predicts_answers(served_run, tmp_path, capsys):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium found (install it: apt-get install -y chromium); the real-browser test is skipped")
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(PageServer(served_run)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started, "the page did not start"
        # The form's submission, as the browser sends it (method=get): the query string.
        query = urllib.parse.urlencode({"task": "sst2", "text": "the actor was great"})
        url = f"http://127.0.0.1:{port}/?{query}"
        dom = _browser(binary, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        rows = _AnswerRows()
        rows.feed(dom.stdout)
        expected = cli_predictions(served_run, "sst2", ["the actor was great"], capsys)
        shown = {method: "\t".join([cells[1]] + cells[2].split(" ")) for method, cells in rows.rows.items()}
        assert shown == expected
        shot = tmp_path / "serve_page.png"
        _browser(binary, f"--screenshot={shot}", "--window-size=1200,800", url)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""A small local web page over a finished (or running) run or study: every method's answer side by side.

``taskstream serve RUN_OR_STUDY`` starts it (FastAPI, served by uvicorn, on 127.0.0.1 by default). A
student picks a task, types a sentence (or a pair), and sees each method's label and class probabilities,
with what the method stores for that task: its artifact's bytes and that size over full finetuning's (the
run's ``full`` artifact for the task when the run has one, else the encoder's bytes as loaded). A second
view shows the run's storage and score curves: its figures when ``taskstream plot`` drew them, and the
ledger's numbers as a table either way.

Safety: answers come from one :class:`~stream.engine.serving.TaskBank` per run, whose live backbone is
shared state: every prediction holds one lock. Input is refused with a clear message when empty or longer
than :data:`MAX_TEXT_CHARS`. Nothing is unpickled: the bank reads JSON and safetensors files only, and
figures are sent as the PNG files they are, by name from the run's figures folder.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from stream.core.errors import ArtifactError, ConfigError, DataError, RunDirectoryError
from stream.core.ledger import read_ledger
from stream.core.rundir import CONFIG_FILE, LEDGER_FILE
from stream.engine.run_index import read_served_config
from stream.engine.serving import TaskBank

MAX_TEXT_CHARS = 1000
FIGURES_DIR = "figures"  # where `taskstream plot` draws a run's figures (analysis.report.FIGURES_DIR)
STUDY_FILE = "study.json"
USER_ERRORS = (ConfigError, DataError, RunDirectoryError, ArtifactError)


def run_directories(target: Path) -> dict[str, Path]:
    """The runs a page serves, by display name: the run itself, or every run of a study with a ledger."""
    target = Path(target)
    if (target / STUDY_FILE).is_file():
        study = json.loads((target / STUDY_FILE).read_text(encoding="utf-8"))
        runs = {entry["run_dir"]: target / entry["run_dir"] for entry in study.get("runs", [])}
        runs = {name: path for name, path in runs.items() if (path / LEDGER_FILE).is_file()}
        if not runs:
            raise RunDirectoryError(f"Study {target} has no run with a finished step yet; serve it once "
                                    "`taskstream sweep` has finished one.")
        return runs
    if not (target / CONFIG_FILE).is_file() or not (target / LEDGER_FILE).is_file():
        raise RunDirectoryError(f"{target} is neither a run directory ({CONFIG_FILE} and {LEDGER_FILE}) nor a "
                                f"study directory ({STUDY_FILE}): give what `taskstream run` or `taskstream sweep` "
                                "wrote.")
    return {target.name or str(target): target}


@dataclass(frozen=True)
class Progress:
    """How much of a run is done: (method, task) steps with an artifact against those its config asks for."""

    done: int
    planned: int

    @property
    def finished(self) -> bool:
        return self.done >= self.planned

    def note(self) -> str:
        """A sentence for the page, empty when the run is finished."""
        if self.finished:
            return ""
        return (f"This run is unfinished: {self.done} of {self.planned} training steps are done. Methods and "
                "tasks not trained yet are not shown; resume the run with `taskstream run` to finish it.")


def check_texts(texts: list[str]) -> list[str]:
    """The example's texts, stripped; empty or oversized input is refused with a message saying so."""
    cleaned = [text.strip() for text in texts]
    for number, text in enumerate(cleaned, 1):
        which = f"text {number}" if len(cleaned) > 1 else "the text"
        if not text:
            raise DataError(f"Type something: {which} is empty.")
        if len(text) > MAX_TEXT_CHARS:
            raise DataError(f"{which.capitalize()} has {len(text):,} characters; the page takes at most "
                            f"{MAX_TEXT_CHARS:,} per text (the models read only the first tokens anyway).")
    return cleaned


class PageServer:
    """The state behind the page: a TaskBank per run (loaded on first use) and one lock around them all.

    Args:
        target: a run or study directory.
        device: where banks serve (``cpu`` by default: a teaching page should not take a GPU).
        backbone: an already loaded backbone for every bank (tests pass a tiny one).
    """

    def __init__(self, target: str | Path, *, device: str = "cpu", backbone=None) -> None:
        self.target = Path(target)
        self.runs = run_directories(self.target)
        self._device = device
        self._backbone = backbone
        self._banks: dict[str, TaskBank] = {}
        self.lock = threading.Lock()  # the live backbone is shared: one prediction (all methods) at a time

    def run_name(self, run: str | None) -> str:
        """The run a request means (default: the first)."""
        if run is None or run == "":
            return next(iter(self.runs))
        if run not in self.runs:
            raise ConfigError(f"No run {run!r} here; the runs: {', '.join(self.runs)}.")
        return run

    def bank(self, run: str) -> TaskBank:
        """The run's bank; call with :attr:`lock` held (building it may load the backbone)."""
        if run not in self._banks:
            backbone = self._backbone or next((b.backbone for b in self._banks.values()
                                               if b.config["backbone"] == read_served_config(self.runs[run])["backbone"]),
                                              None)
            self._banks[run] = TaskBank(self.runs[run], backbone=backbone, device=self._device)
        return self._banks[run]

    def progress(self, run: str) -> Progress:
        config = read_served_config(self.runs[run])
        done = {(row["method"], row["task"]) for row in read_ledger(self.runs[run])}
        return Progress(done=len(done), planned=len(config["tasks"]) * len(config["methods"]))

    def tasks(self, run: str) -> dict[str, tuple[str, ...]]:
        """Each task of the run with a finished step, with its text columns, in the run's order."""
        config = read_served_config(self.runs[run])
        done = {row["task"] for row in read_ledger(self.runs[run])}
        with self.lock:
            bank = self.bank(run)
            return {task: bank.task_spec(task).text_columns for task in config["tasks"] if task in done}

    def storage(self, run: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(method label, task) -> bytes to store the task and that over full finetuning's bytes."""
        rows = list(read_ledger(self.runs[run]))
        trained = {(row["method"], row["task"]): row for row in rows if row["task"] == row.get("eval_task",
                                                                                               row["task"])}
        full = {row["task"]: row["artifact_bytes"] for row in trained.values() if row["method_name"] == "full"}
        out = {}
        for (label, task), row in trained.items():
            reference = full.get(task, row["backbone_bytes"])
            out[(label, task)] = {"bytes": row["artifact_bytes"], "reference_bytes": reference,
                                  "reference": "full" if task in full else "encoder",
                                  "times_full": row["artifact_bytes"] / reference}
        return out

    def answers(self, run: str, task: str, texts: list[str]) -> list[dict[str, Any]]:
        """Every method's answer for one example of ``task``, in the run's method order."""
        texts = check_texts(texts)
        storage = self.storage(run)
        with self.lock:
            bank = self.bank(run)
            spec = bank.task_spec(task)
            if len(texts) != len(spec.text_columns):
                raise DataError(f"Task {task!r} takes {len(spec.text_columns)} text(s) "
                                f"({' and '.join(spec.text_columns)}); {len(texts)} given.")
            out = []
            for label in bank.methods:
                if task not in bank.tasks(label):
                    continue
                prediction = bank.predict(task, [tuple(texts)], method=label)[0]
                out.append({"method": label, **prediction.to_dict(), **storage.get((label, task), {})})
            bank.reset()
        return out


# ------------------------------------------------------------------------------------------------- HTML
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
nav a{margin-right:1.5em} table{border-collapse:collapse;margin:1em 0} th,td{padding:.35em .8em;
border-bottom:1px solid #ddd;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff4ce;border:1px solid #e0c060;padding:.6em 1em} .error{background:#fde2e1;
border:1px solid #d08080;padding:.6em 1em} input[type=text]{width:40em} label{display:block;margin:.5em 0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def _nav(server: PageServer, run: str) -> str:
    q = f"?run={html.escape(run, quote=True)}"
    runs = ""
    if len(server.runs) > 1:
        links = " ".join(f'<a href="/?run={html.escape(name, quote=True)}">{html.escape(name)}</a>'
                         for name in server.runs)
        runs = f"<p>Runs: {links}</p>"
    return f'<nav><a href="/{q}">Ask the models</a><a href="/curves{q}">Storage and score curves</a></nav>{runs}'


def _answers_table(answers: list[dict[str, Any]]) -> str:
    rows = []
    for a in answers:
        if "value" in a:
            answer = f'<td class=label data-value="{a["value"]:.4f}">{a["value"]:.4f}</td><td></td>'
        else:
            probs = " ".join(f"{html.escape(name)}={p:.4f}" for name, p in a["probabilities"].items())
            answer = f'<td class=label>{html.escape(a["label"])}</td><td class=probs>{probs}</td>'
        size = (f'<td class=num>{a["bytes"]:,}</td><td class=num>{a["times_full"]:.2g}x</td>'
                if "bytes" in a else "<td></td><td></td>")
        rows.append(f'<tr data-method="{html.escape(a["method"], quote=True)}"><td>{html.escape(a["method"])}</td>'
                    f"{answer}{size}</tr>")
    reference = next((a["reference"] for a in answers if "reference" in a), "full")
    over = "full finetuning" if reference == "full" else "a full copy of the encoder"
    return ("<table id=answers><thead><tr><th>method</th><th>answer</th><th>probabilities</th>"
            f"<th>bytes stored for this task</th><th>x {over}</th></tr></thead><tbody>{''.join(rows)}</tbody>"
            "</table>")


def ask_page(server: PageServer, run: str, task: str | None, texts: list[str]) -> tuple[str, int]:
    """The main view: the form, and the answers when an example was submitted. Returns (html, status)."""
    status, message, result = 200, "", ""
    tasks = server.tasks(run)
    if task and task not in tasks:
        with server.lock:
            server.bank(run).task_spec(task)  # an unknown name is refused with the run's tasks listed
        raise RunDirectoryError(f"No method of run {run} has finished task {task!r} yet; resume the run first.")
    task = task or next(iter(tasks), None)
    if task is not None and any(t.strip() for t in texts if t is not None):
        try:
            answers = server.answers(run, task, [t or "" for t in texts[:len(tasks[task])]])
            result = _answers_table(answers)
        except USER_ERRORS as exc:
            status, message = 400, f'<p class=error role=alert>{html.escape(str(exc))}</p>'
    elif texts and any(t is not None for t in texts):
        status, message = 400, '<p class=error role=alert>Type something: the text is empty.</p>'
    progress = server.progress(run)
    note = f'<p class=note role=status>{html.escape(progress.note())}</p>' if progress.note() else ""
    options = "".join(f'<option value="{html.escape(t, quote=True)}"{" selected" * (t == task)}>'
                      f'{html.escape(t)} ({" + ".join(map(html.escape, cols))})</option>' for t, cols in tasks.items())
    values = [html.escape(t or "", quote=True) for t in (texts + [None, None])[:2]]
    form = (f'<form method=get action="/"><input type=hidden name=run value="{html.escape(run, quote=True)}">'
            f'<label>Task <select name=task>{options}</select></label>'
            f'<label>Text <input type=text name=text maxlength={MAX_TEXT_CHARS} value="{values[0]}"></label>'
            f'<label>Second text (pair tasks only) <input type=text name=text2 maxlength={MAX_TEXT_CHARS} '
            f'value="{values[1]}"></label><button type=submit>Answer</button></form>')
    explain = ("<p>Every method of the run answers from the same backbone in memory, switched to the task by "
               "its own small file. Bytes are what the method stores for the task; the last column divides "
               "them by what full finetuning stores.</p>")
    return _page(f"taskstream: {run}", _nav(server, run) + note + explain + form + message + result), status


def curves_page(server: PageServer, run: str) -> str:
    """The second view: the run's figures (if drawn) and its storage and score numbers per step."""
    figures_dir = server.runs[run] / FIGURES_DIR
    names = sorted(p.stem for p in figures_dir.glob("*.png")) if figures_dir.is_dir() else []
    q = html.escape(run, quote=True)
    images = "".join(f'<h3>{html.escape(n)}</h3><img alt="{html.escape(n, quote=True)}" '
                     f'src="/figure/{html.escape(n, quote=True)}.png?run={q}">' for n in names)
    if not images:
        images = ("<p>No figures drawn yet (`taskstream plot RUN` draws them); the numbers are below.</p>")
    rows = list(read_ledger(server.runs[run]))
    cells = []
    for (label, step), group in sorted(_by_step(rows).items(), key=lambda kv: (kv[0][0], kv[0][1])):
        scores = [r["score"] for r in group if r.get("score") is not None]
        average = sum(scores) / len(scores) if scores else float("nan")
        trained = next((r for r in group if r["task"] == r.get("eval_task", r["task"])), group[0])
        cells.append(f"<tr><td>{html.escape(label)}</td><td class=num>{step}</td><td>{html.escape(trained['task'])}"
                     f"</td><td class=num>{trained['cumulative_bytes']:,}</td><td class=num>{len(scores)}</td>"
                     f"<td class=num>{average:.2f}</td></tr>")
    table = ("<table id=curves><thead><tr><th>method</th><th>step</th><th>task arrived</th><th>bytes stored so "
             "far (shared backbone included)</th><th>tasks scored</th><th>average score</th></tr></thead><tbody>"
             f"{''.join(cells)}</tbody></table>")
    note = server.progress(run).note()
    note = f'<p class=note role=status>{html.escape(note)}</p>' if note else ""
    return _page(f"taskstream: {run}, storage and scores", _nav(server, run) + note + images + table)


def _by_step(rows: list[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["step"]), []).append(row)
    return groups


def create_app(server: PageServer) -> FastAPI:
    """The FastAPI application: ``/`` (ask), ``/curves``, ``/figure/NAME.png`` and ``/api/predict`` (JSON)."""
    app = FastAPI(title="taskstream", docs_url=None, redoc_url=None, openapi_url=None)

    def _error(exc: Exception) -> HTMLResponse:
        return HTMLResponse(_page("taskstream", f'<p class=error role=alert>{html.escape(str(exc))}</p>'),
                            status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def ask(run: str | None = None, task: str | None = None, text: str | None = Query(None),
            text2: str | None = Query(None)):
        try:
            name = server.run_name(run)
            body, status = ask_page(server, name, task, [text, text2] if text2 is not None else [text])
        except USER_ERRORS as exc:
            return _error(exc)
        return HTMLResponse(body, status_code=status)

    @app.get("/curves", response_class=HTMLResponse)
    def curves(run: str | None = None):
        try:
            return HTMLResponse(curves_page(server, server.run_name(run)))
        except USER_ERRORS as exc:
            return _error(exc)

    @app.get("/figure/{name}.png")
    def figure(name: str, run: str | None = None):
        try:
            figures_dir = server.runs[server.run_name(run)] / FIGURES_DIR
        except USER_ERRORS as exc:
            return _error(exc)
        # Only a figure that is in the folder's listing: no path from the request reaches the file system.
        found = {p.stem: p for p in figures_dir.glob("*.png")} if figures_dir.is_dir() else {}
        if name not in found:
            return JSONResponse({"error": f"no figure {name!r}"}, status_code=404)
        return FileResponse(found[name], media_type="image/png")

    @app.get("/api/predict")
    def predict(task: str, text: str, text2: str | None = None, run: str | None = None):
        try:
            name = server.run_name(run)
            answers = server.answers(name, task, [text] if text2 is None else [text, text2])
        except USER_ERRORS as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return {"run": name, "task": task, "finished": server.progress(name).finished, "answers": answers}

    return app


def serve(target: str | Path, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    """Start the page and serve until interrupted (the ``taskstream serve`` command)."""
    import uvicorn

    server = PageServer(target, device=device)
    print(f"taskstream serve: open http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(server), host=host, port=port, log_level="warning")

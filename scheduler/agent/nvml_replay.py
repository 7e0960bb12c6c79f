"""Recorded NVML answers: the file format, the replay (tests and demos without a GPU) and the recorder.

Format (`gpufair-nvml-recording/1`, see tests/data/nvml/README.md):

    {"format": "gpufair-nvml-recording/1", "machine": "...", "source": "...",
     "calls": {"<nvml function>": {"<args joined by ','>": ANSWER, ...}, ...}}

ANSWER is {"value": ...} or {"error": "NVML_ERROR_..."}, or a list of those answered in turn
(the last one repeats, so a poll loop can run on). A call that the file does not hold raises
`UnrecordedCall`, never a default: a replay that quietly made things up would prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pynvml

from scheduler.agent.nvml_api import FUNCTIONS, NvmlApi, error_name, nvml_error

FORMAT = "gpufair-nvml-recording/1"


class UnrecordedCall(LookupError):
    """The reader asked for something the recording does not hold (not an NVML error on purpose,
    so the reader's per-field NVML handling cannot swallow it)."""


def args_key(args: tuple[int, ...]) -> str:
    return ",".join(str(int(a)) for a in args)


def _check_answer(where: str, answer: Any) -> None:
    answers = answer if isinstance(answer, list) else [answer]
    if not answers:
        raise ValueError(f"{where}: empty answer list; record at least one answer")
    for a in answers:
        if not isinstance(a, dict) or len(a) != 1 or not ({"value", "error"} & a.keys()):
            raise ValueError(
                f"{where}: an answer is {{'value': ...}} or {{'error': 'NVML_ERROR_...'}}, got {a!r}"
            )
        if "error" in a:
            nvml_error(a["error"])  # refuses unknown names now, not during a test


def load_recording(path: str | Path) -> dict[str, Any]:
    """Read and check a recording; errors name the file, the call and the fix."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read NVML recording: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{path}: not a {FORMAT} file (format is {found!r})")
    calls = doc.get("calls")
    if not isinstance(calls, dict):
        raise ValueError(f"{path}: 'calls' must map NVML function names to answers")
    for fn, by_args in calls.items():
        if fn not in FUNCTIONS:
            raise ValueError(
                f"{path}: {fn} is not in the reader's NVML interface ({', '.join(sorted(FUNCTIONS))})"
            )
        if not isinstance(by_args, dict):
            raise ValueError(f"{path}: calls.{fn} must map argument strings to answers")
        for key, answer in by_args.items():
            _check_answer(f"{path}: {fn}({key})", answer)
    return doc


class ReplayApi:
    """Answers from a recording. Tests may `override()` an answer to stage a fault (an Xid, an
    ECC error) on top of the recorded healthy machine."""

    def __init__(self, recording: dict[str, Any] | str | Path) -> None:
        self.doc = recording if isinstance(recording, dict) else load_recording(recording)
        self.machine: str = self.doc.get("machine", "?")
        self._calls: dict[str, dict[str, Any]] = {fn: dict(v) for fn, v in self.doc["calls"].items()}
        self._position: dict[tuple[str, str], int] = {}
        self.log: list[tuple[str, str]] = []

    def override(self, function: str, args: tuple[int, ...], *answers: dict[str, Any]) -> None:
        _check_answer(f"override {function}{args}", list(answers))
        self._calls.setdefault(function, {})[args_key(args)] = list(answers)
        self._position.pop((function, args_key(args)), None)

    def call(self, function: str, *args: int) -> Any:
        key = args_key(args)
        self.log.append((function, key))
        try:
            answer = self._calls[function][key]
        except KeyError:
            raise UnrecordedCall(
                f"{self.machine}: {function}({key}) is not in the recording; record it with "
                "scripts/record_nvml.py on such a machine, or add it to the file"
            ) from None
        if isinstance(answer, list):
            pos = self._position.get((function, key), 0)
            self._position[(function, key)] = min(pos + 1, len(answer) - 1)
            answer = answer[pos]
        if "error" in answer:
            raise nvml_error(answer["error"])
        return answer["value"]


class RecordingApi:
    """Passes calls to another api and writes down each answer, in the replay format. Repeated
    calls with the same arguments keep every distinct answer in order."""

    def __init__(self, inner: NvmlApi) -> None:
        self.inner = inner
        self.calls: dict[str, dict[str, Any]] = {}

    def call(self, function: str, *args: int) -> Any:
        key = args_key(args)
        try:
            value = self.inner.call(function, *args)
        except pynvml.NVMLError as exc:
            self._note(function, key, {"error": error_name(exc)})
            raise
        self._note(function, key, {"value": value})
        return value

    def _note(self, function: str, key: str, answer: dict[str, Any]) -> None:
        slot = self.calls.setdefault(function, {})
        if key not in slot:
            slot[key] = answer
            return
        seen = slot[key] if isinstance(slot[key], list) else [slot[key]]
        if seen[-1] != answer:
            seen.append(answer)
        slot[key] = seen if len(seen) > 1 else seen[0]

    def document(self, machine: str, source: str) -> dict[str, Any]:
        return {"format": FORMAT, "machine": machine, "source": source, "calls": self.calls}

"""archiver.text.report_error: the one rendering of a user error, shared by `archiver` and the
training package's own `python -m archiver_train.*` tools."""

import json

from archiver.errors import NoCatalogError, UsageError
from archiver.text import report_error


def _capture():
    out = []
    return out, lambda text, err=False: out.append(("err" if err else "out", text))


def test_a_user_error_is_one_line_on_stderr_and_its_own_exit_code():
    out, echo = _capture()
    code = report_error(UsageError("bad --mode"), "archiver", False, echo)
    assert code == UsageError("x").exit_code
    assert out == [("err", "archiver: error: bad --mode")]


def test_with_json_the_error_object_comes_first_on_stdout():
    out, echo = _capture()
    err = NoCatalogError("no catalog at /x")
    code = report_error(err, "archiver-train", True, echo)
    assert code == err.exit_code != UsageError("x").exit_code
    (where, text), last = out[0], out[1]
    assert where == "out"
    assert json.loads(text) == {"error": "no catalog at /x", "kind": "NoCatalogError", "exit_code": err.exit_code}
    assert last == ("err", "archiver-train: error: no catalog at /x")


def test_an_interrupt_exits_130_with_one_line():
    out, echo = _capture()
    assert report_error(KeyboardInterrupt(), "archiver", True, echo) == 130
    assert out == [("err", "archiver: interrupted")]

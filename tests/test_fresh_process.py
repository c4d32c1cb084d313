"""run_json_child: a measurement in a fresh process, read back as its last JSON line."""

from __future__ import annotations

import pytest

from gptperf.measure.fresh_process import run_json_child


def test_the_last_line_of_a_child_is_its_answer() -> None:
    code = "import sys, json; print('warming up'); print(json.dumps({'got': sys.stdin.read()}))"
    assert run_json_child(["-c", code], stdin="hello") == {"got": "hello"}


def test_a_failing_or_silent_or_odd_child_is_one_line_naming_what_it_said() -> None:
    with pytest.raises(RuntimeError, match=r"exited 3: out of memory"):
        run_json_child(["-c", "import sys; sys.stderr.write('noise\\nout of memory\\n'); sys.exit(3)"])
    with pytest.raises(RuntimeError, match="exited 0: no output"):
        run_json_child(["-c", "pass"])
    with pytest.raises(RuntimeError, match=r"printed '\[1, 2\]', not a JSON object"):
        run_json_child(["-c", "print([1, 2])"])

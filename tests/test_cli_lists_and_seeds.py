"""Flags every command shares the same way: --seed's range, comma-separated integer lists and
counts (--batch, --seq, --warmup …), refused in one line naming the flag (exit 2) before any work,
never quietly trimmed."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from gptperf.cli import COMMANDS, build_parser, main
from gptperf.commands.common import (
    int_list,
    non_negative_int,
    output_path,
    positive_int,
    positive_step_count,
    seed_number,
    step_count,
)
from gptperf.train import SEED_MAX


@pytest.mark.parametrize("command", [["train"], ["generate"], ["bench", "train"], ["scale"],
                                     ["validate", "--random", "2"]])
@pytest.mark.parametrize("value", ["-1", str(2**64), "1.5"])
def test_every_seed_flag_refuses_what_is_not_an_unsigned_64_bit_integer(command, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--seed", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--seed" in err and value in err


def test_seed_number_keeps_the_whole_range():
    assert seed_number("0") == 0 and seed_number(str(SEED_MAX)) == SEED_MAX


@pytest.mark.parametrize("text", ["4,,8", ",", "", "4,8,", "16 64", "x"])
def test_int_list_refuses_empty_items_and_other_separators(text):
    with pytest.raises(argparse.ArgumentTypeError, match="separated by commas"):
        int_list(text)


def test_int_list_reads_spaces_around_commas():
    assert int_list(" 16, 64 ,256") == (16, 64, 256)


@pytest.mark.parametrize("argv", [["inference", "--contexts", "4,,8"], ["inference", "--batches", ","],
                                  ["scale", "--procs", "1,,2"], ["scale", "--threads", "1,2,"]])
def test_list_flags_refuse_an_empty_item(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert argv[-1] in capsys.readouterr().err


def test_training_at_the_largest_seed_runs_its_evaluation(tmp_path, monkeypatch, capsys):
    # the evaluation draws from a seed of its own, derived from --seed: it must stay in range
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                 "--batch", "2", "--seq", "16", "--max-iters", "1", "--eval-interval", "1",
                 "--eval-iters", "1", "--seed", str(SEED_MAX), "--no-checkpoint", "--json"]) == 0
    assert "val_losses" in capsys.readouterr().out


def _options(parser: argparse.ArgumentParser | None = None,
             words: tuple[str, ...] = ()) -> list[tuple[list[str], argparse.Action]]:
    """(the sub-command's words, the option) for every option of every (sub-)command."""
    found = []
    for action in (parser or build_parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, (*words, name))
        elif action.option_strings:
            found.append((list(words), action))
    return found


LEAST = {positive_int: 1, non_negative_int: 0, positive_step_count: 1, step_count: 0}


def _count_flags(types: tuple[Any, ...] = tuple(LEAST)) -> list[tuple[list[str], str, int]]:
    """(the sub-command's words, a flag, its least value) for every count flag of every command
    (of `types`)."""
    return [(words, a.option_strings[0], LEAST[a.type]) for words, a in _options() if a.type in types]


def test_the_count_flags_are_typed_in_every_command():
    flags = _count_flags()
    commands = {words[0] for words, _, _ in flags}
    assert {"bench", "train", "profile", "scale", "model", "generate", "inference", "roofline"} <= commands
    assert set(commands) <= set(COMMANDS)
    assert (["bench"], "--seq", 1) in flags and (["profile"], "--warmup", 1) in flags
    steps = {(words[0], flag) for words, flag, _ in _count_flags((positive_step_count, step_count))}
    assert {("bench", "--repeats"), ("bench", "--warmup"), ("profile", "--wait"), ("profile", "--active"),
            ("scale", "--steps"), ("scale", "--warmup"), ("train", "--eval-iters"),
            ("train", "--grad-accum")} <= steps


@pytest.mark.parametrize(("words", "flag", "least"), _count_flags((positive_step_count, step_count)))
def test_a_count_of_steps_past_the_most_is_refused_naming_the_flag(words, flag, least, capsys):
    """Days of work asked by a typo are refused before any of it starts."""
    from gptperf.measure.timer import MAX_STEPS

    with pytest.raises(SystemExit) as exc:
        main([*words, flag, str(MAX_STEPS + 1)])
    assert exc.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err == (f"gptperf {' '.join(words)}: error: argument {flag}: must be an integer from "
                   f"{least} to {MAX_STEPS}, got {MAX_STEPS + 1}")


@pytest.mark.parametrize(("words", "flag", "least"), _count_flags())
def test_a_count_below_its_least_is_refused_naming_the_flag(words, flag, least, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, flag, str(least - 1)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0] == (f"gptperf {' '.join(words)}: error: argument {flag}: must be an integer >= "
                      f"{least}, got {least - 1}")


def test_every_output_flag_expands_a_quoted_tilde_as_its_checks_do():
    """--out, --plot, --plot-dir: the checks before the work expand ~ (`writable.usable_path`),
    so the value the writing gets must be expanded too, or a check would pass on one file and the
    command write another."""
    found = [(words, a.option_strings[0], a.type) for words, a in _options()
             if set(a.option_strings) & {"--out", "--plot", "--plot-dir"}]
    assert len(found) >= 10
    assert [f for f in found if f[2] is not output_path] == []


def test_no_command_is_one_line_naming_the_commands(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert out == "" and line.startswith("gptperf: error: give a command") and all(c in line for c in COMMANDS)


def test_a_command_takes_sigterm_except_in_a_torchrun_rank(monkeypatch):
    """Every command turns SIGTERM into an unwinding (`gptperf.signals`); a torchrun rank keeps
    the default, since torchrun stops its ranks itself and one may be held in a collective."""
    import signal

    import gptperf.commands.model

    seen = []
    monkeypatch.setattr(gptperf.commands.model, "run", lambda args: seen.append(signal.getsignal(signal.SIGTERM)))
    before = signal.getsignal(signal.SIGTERM)
    assert main(["model"]) == 0
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert main(["model"]) == 0
    assert seen[0] is not before and seen[1] is before and signal.getsignal(signal.SIGTERM) is before

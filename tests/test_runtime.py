"""Device names (`gptperf.runtime.as_device`): a name is checked, a torch.device passes as it is."""

from __future__ import annotations

import pytest
import torch

from gptperf.errors import UserError
from gptperf.runtime import as_device


def test_a_name_becomes_a_device_and_a_device_stays_one() -> None:
    assert as_device("cpu") == torch.device("cpu")
    assert as_device(torch.device("cpu")) == torch.device("cpu")
    assert as_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x"])
def test_an_unknown_device_name_is_a_one_line_error_naming_it(name: str) -> None:
    with pytest.raises(UserError) as err:
        as_device(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


def test_last_level_cache_is_the_highest_data_level_linux_lists(tmp_path) -> None:
    """/sys/devices/system/cpu/cpu0/cache/index*: the highest level that is not an instruction
    cache, its size in K/M units; 0 where nothing is listed."""
    from gptperf.envinfo import last_level_cache_bytes

    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "64M"),
                                             (2, "Unified", "1024K"), (3, "Unified", "32768K")]):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(tmp_path) == 32 * 2**20
    assert last_level_cache_bytes(tmp_path / "missing") == 0

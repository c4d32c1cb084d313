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

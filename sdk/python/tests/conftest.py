"""The ``traced`` fixture, once for each of the processor's two ways of setting the value."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import support

# No resource detector may look beyond this machine, here or in the processes the tests start.
os.environ["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = "otel"


@pytest.fixture(params=["ending hook", "on_end wrapper"])
def traced(request: pytest.FixtureRequest) -> Iterator[support.Traced]:
    res = support.traced()
    if request.param == "on_end wrapper":
        # What SDKs without the _on_ending hook (before 1.40) get.
        res.processor._wrap_on_end = True
    elif res.processor._wrap_on_end:
        pytest.skip("this SDK has no _on_ending hook that takes the attribute")
    yield res
    res.provider.shutdown()

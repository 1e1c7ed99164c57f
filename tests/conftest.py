import logging
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modeling"))

from two_stage_fixtures import single_thread  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_sgg_logger():
    """Scripts under test call setup_logger, which stops propagation of the 'sgg' logger; undo it
    so that caplog in later tests sees the package's records."""
    logger = logging.getLogger("sgg")
    state = (logger.propagate, list(logger.handlers), logger.level)
    yield
    for h in list(logger.handlers):
        if h not in state[1]:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = state[0], state[2]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a shared, busy 2-core machine OpenMP spin-waiting makes 2 threads far slower than 1 for tiny
    convolutions."""
    with single_thread():
        yield

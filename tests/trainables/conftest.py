from collections.abc import Iterator

import pytest
import torch

from trainables.data.cached import CachedData
from trainables.data.toy import make_toy_cached


@pytest.fixture(scope="session")
def tiny_data() -> CachedData:
    return make_toy_cached()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module: on 2 shared cores, intra-op threads only add contention
    for tiny tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

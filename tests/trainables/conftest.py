import pytest

from tests.tiny import make_tiny_cached
from trainables.data.cached import CachedData


@pytest.fixture(scope="session")
def tiny_data() -> CachedData:
    return make_tiny_cached()

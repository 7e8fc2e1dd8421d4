import pytest
import torch


@pytest.fixture
def one_thread():
    """Run torch single-threaded: the test machine is shared, and one thread avoids OpenMP contention
    and keeps floating-point results comparable between runs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Data that commands cache (e.g. prepared sdf_vid folders) goes to a temporary folder, not ~/.cache."""
    import os

    old = os.environ.get("CELLINR_CACHE")
    os.environ["CELLINR_CACHE"] = str(tmp_path_factory.mktemp("cellinr-cache"))
    yield
    if old is None:
        os.environ.pop("CELLINR_CACHE", None)
    else:
        os.environ["CELLINR_CACHE"] = old

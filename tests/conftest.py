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

"""Shared fixtures. Tests never download: real data comes from Debian's Fashion-MNIST package
(`make test` installs it when it can, or says how) and scikit-learn's bundled digits."""

from __future__ import annotations

import pytest
import torch

from transferscope.data import fashion_mnist


def fashion_available() -> bool:
    try:
        fashion_mnist.locate(download=False)
    except Exception:
        return False
    return True


requires_fashion = pytest.mark.skipif(
    not fashion_available(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny models: more threads only wait for busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

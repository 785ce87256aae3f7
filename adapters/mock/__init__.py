"""The built-in mock backend (`kind: mock`): deterministic answers that follow the request, no network.

config.py    the `kind: mock` block
answers.py   the answers it makes up (there is no upstream: no request narrowing, no error table)
adapter.py   `MockAdapter`
"""

from adapters.mock.adapter import MockAdapter, create
from adapters.mock.config import MockConfig

Config = MockConfig

__all__ = ("Config", "MockAdapter", "MockConfig", "create")

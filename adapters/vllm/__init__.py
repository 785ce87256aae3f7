"""vLLM's OpenAI-compatible server (`kind: vllm`).

config.py    the `kind: vllm` block
request.py   the canonical request narrowed to vLLM's chat and completions bodies
errors.py    vLLM's error shapes and its status table
answers.py   chunks and bodies as canonical events (vLLM's quirks)
adapter.py   `VLLMAdapter`: the calls, through the shared kit (`adapters.upstream`)
"""

from adapters.vllm.adapter import VLLMAdapter, create
from adapters.vllm.config import VLLMConfig

Config = VLLMConfig

__all__ = ("Config", "VLLMAdapter", "VLLMConfig", "create")

"""Anthropic Messages wire shapes (msgspec Structs), as `gateway.openai` holds OpenAI's."""

"""OpenAI requests → canonical requests, and canonical events → OpenAI answers (the writers)."""

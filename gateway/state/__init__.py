"""State that outlives a request: stored Responses (in Redis when `redis_url` is set, else in process)."""

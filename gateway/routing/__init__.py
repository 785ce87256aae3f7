"""Public model names → targets: the failover loop, circuit breakers, health probes and backend slots."""

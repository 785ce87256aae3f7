"""The usage ledger: requests, tokens, cost and errors per UTC day, key, team and model."""

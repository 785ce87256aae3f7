"""Keys and teams made through the admin API: `records.py` (their shapes), `store.py` (Redis, where
they live), `cache.py` (each replica's in-memory copy, what authentication reads). The admin routes
are `gateway.admin.keys`; the CLI is `gateway.admin.cli`."""

"""The control plane: the admin API (`/admin/v1/...`), its key, and the listener it is served on.

`routes.admin_routes(gateway)` collects every admin module's routes; `auth` checks the admin key;
`listener` keeps the admin paths and the public ones apart when `admin.listen` is set.
"""

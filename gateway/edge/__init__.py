"""The HTTP edge: the server, raw ASGI plumbing, the one middleware, API keys and the OpenAPI document.

Everything a request passes through before its endpoint's module sees it.
"""

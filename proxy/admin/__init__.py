"""The operators' HTTP control plane: the admin API, health and metrics on one listener.

``auth`` (bearer tokens and their scopes, compared in constant time), ``api`` (the
``/v1`` endpoints, the OpenAPI document, and `Control`: what the API asks of the
gateway) and ``server`` (the aiohttp server in the proxy's own event loop). The
gateway starts the server and implements `Control`; nothing here reaches into it.
"""

"""Running and watching the proxy: what operators touch.

``cli`` (the `bounceback` command), ``demo`` (the self-contained demonstration),
``stats`` and ``report`` (bounce patterns from the store) and ``term`` (terminal
output).
"""

"""Where messages live between their acceptance and their final receipt.

``sqlite`` (the embedded default: one file, group commits, fault handling) and
``postgres`` (several instances on one database, with its ``migrations/``). Both
offer the same interface to the gateway.
"""

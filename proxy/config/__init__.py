"""The configuration: what every other room is told to do.

``settings`` turns a TOML file into a validated, typed tree (every problem named by
file, key and reason); ``reference`` writes the README's configuration reference from
it; ``tls`` builds the TLS contexts the settings describe; ``resources`` finds the
configs shipped in the package (starter, example, presets); ``extras`` says which
optional dependency a setting needs. Nothing here opens a socket or runs a loop.
"""

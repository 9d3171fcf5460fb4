"""The only module the services share: message shapes, model descriptors, limits, the error envelope.

Services import from here and talk over HTTP; they never import each other's internals.
"""

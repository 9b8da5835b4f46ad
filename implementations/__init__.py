"""tbench implementations: a full Transformer and its pluggable optimisation strategies.

Strategies live one per file under an axis package (``attention``, ``padding``, ``precision``,
``parallel``, ``ops``) and are found through :mod:`implementations.registry`.
"""

"""Suites, parent process: YAML -> validated ``Suite`` -> expanded, validated ``Point``s.

``errors`` (user-error lines), ``schema`` (the section models), ``strategies`` (names -> strategy
objects), ``paths`` (dotted field paths), ``loader`` (the ``Suite`` model and its strict reader),
``point`` (one resolved experiment), ``sweep`` (profiles, ``--set`` and expansion).
"""

"""Offline analysis of run folders; never imports torch, ``implementations`` or the other
harness stages: ``results`` (the results files and the DataFrame), ``stats``, ``compare``,
``report`` + ``plots`` + ``templates``, ``export``.
"""

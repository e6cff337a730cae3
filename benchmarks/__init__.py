"""Benchmarks of napari-softcopy against ``cp -r``, ``rsync -a`` and ``softcopy``.

Run everything with ``python -m benchmarks.run`` (``--quick`` for a short smoke run); see
``docs/benchmarks.md`` for the results and how they were measured.
"""

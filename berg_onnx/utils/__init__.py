"""Helpers every layer shares, none of them about models.

- ``fileio``: atomic writes, hashing, the one header-checked ``.npy`` opener;
- ``outputs``: response files written as a pair (``.npy``/NIfTI + its ``.paths.txt``);
- ``progress``: the one progress bar (tqdm, or a silent bar);
- ``cpu``: the CPU's int8 kernel class, for the int8 tier's guarantees.
Bottom layer: may import only ``errors`` and ``constants``.
"""

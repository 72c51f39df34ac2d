"""Responses in brain space: NIfTI volumes, figures, run stores read back for them.

- ``volume``: (N, nv) responses <-> 4-D NIfTI in the subject's space (nibabel, ``[viz]``);
- ``plot``: response maps and accuracy figures (matplotlib Agg, ``[viz]``);
- ``runs``: responses from a run store or an encode output, with their metadata.
May import ``experiment`` (the store), ``source``, ``utils``; never ``api``, ``engines``, ``cli``.
"""

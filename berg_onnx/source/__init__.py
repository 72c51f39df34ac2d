"""Where models come from: the catalogue, an export's manifest, its files and their metadata.

- ``catalog``: models.json (model ids, subjects, ROIs, the pinned Hub repo) and ``model_key``;
- ``manifest`` (+ ``_schema``, the untrusted manifest's field checks): the export contract;
- ``local``: an export folder on disk (``LocalStore``) and the ``ModelSource`` protocol;
- ``hub``: the same files from a Hub repo at a pinned revision, downloaded and verified;
- ``metadata``: a model's ``.npz`` metadata, read member by member (``safezip`` checks the zip);
- ``cards``: the model cards ``BERG.describe`` prints (data in the wheel).
May import ``utils``, ``errors``, ``constants``; never anything above.
"""

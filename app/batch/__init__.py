"""``medserve batch``: retrospective inference over an archive on Ray Data.

- ``sources``: what to run over (a folder or glob of files, a manifest CSV, a QIDO query on the
  configured PACS) as records ``{"id", "path"}`` / ``{"id", "study_instance_uid", ...}``.
- ``stages``: one row through the service's own code: ``pipeline.decode_for`` →
  ``imaging.preprocess`` → one batched run → ``imaging.postprocess`` (and
  ``pipeline.analyze_series`` for PACS series). No Ray in it; tests call it directly.
- ``output``: the Parquet folder (atomic part files, the ids already done for ``--resume``).
- ``progress``: a bar on a terminal, JSON lines otherwise.
- ``run``: the Ray Data plan (read+decode+preprocess in tasks, infer in an actor pool with the
  model loaded once per actor on the runtime the settings choose, ``app.runtime``; postprocess
  in tasks) and the command's entry point.

Ray and pyarrow come with the ``batch`` extra; nothing else in ``app`` imports this package.
"""

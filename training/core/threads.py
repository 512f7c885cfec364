"""One place that caps TensorFlow's thread pools."""

from __future__ import annotations

import logging

log = logging.getLogger("medserve.training")


def limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's intra-op threads at ``threads`` and inter-op at ``min(2, threads)``
    (None or 0: TensorFlow's default). Only possible before TensorFlow starts its runtime; a
    later call keeps what the process has and says so in the log."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised in this process: keep what it has
        log.info("TensorFlow threads already fixed for this process")

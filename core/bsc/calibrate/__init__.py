"""``bsc calibrate``: what binary codes cost on *your* prompts and embedder, and which settings to use.

Measures, against exact float search on the same embeddings, the retrieval quality of bsc's binary codes
at 64-1024 bits beside faiss PQ and int8 at equal bytes per entry, how often the real cache decides like
float search, bit balance and the geometry of the embeddings; with labelled prompt pairs, the hit
quality per threshold and a recommended threshold and code size with a confidence interval.

numpy and bsc only at import; matplotlib (plots) and faiss (the PQ rows) are imported when used.

Example:
    >>> from bsc.calibrate import calibrate, demo_pairs, write_report
    >>> from bsc.embedders import default_embedder
    >>> pairs = demo_pairs()
    >>> result = calibrate([t for p in pairs for t in (p.q1, p.q2)], pairs=pairs,
    ...                    embedder=default_embedder())  # doctest: +SKIP
    >>> write_report(result, "calibration")  # doctest: +SKIP
"""

from bsc.calibrate.campaign import Calibration, calibrate
from bsc.calibrate.inputs import CalibrationInputError, LabelledPair, demo_pairs, load_pairs, load_prompts
from bsc.calibrate.report import write_report

__all__ = [
    "Calibration",
    "CalibrationInputError",
    "LabelledPair",
    "calibrate",
    "demo_pairs",
    "load_pairs",
    "load_prompts",
    "write_report",
]

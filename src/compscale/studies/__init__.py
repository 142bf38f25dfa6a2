"""Studies that answer the seed's questions with trained models: ResNeXt's cardinality against depth and
width at equal cost (:mod:`~compscale.studies.cardinality`), and ResNeXt against Inception-ResNet (with
EfficientNet for reference) at matched cost levels (:mod:`~compscale.studies.families`).

Both train every model × seed through the one job runner (:mod:`compscale.jobs`: resumable, parallel
workers, several machines through one PostgreSQL URL) and write JSON, a PNG and a markdown section for the
report.
"""

from compscale.studies.common import MATCH_TOLERANCE, STUDY_RECIPE, study_settings

__all__ = ["MATCH_TOLERANCE", "STUDY_RECIPE", "study_settings"]

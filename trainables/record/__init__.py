"""The study's record: writing it (trials, driver) and reading it back (analysis), in one home.

- ``schema``: names, statuses, stages, artifact paths, columns (torch- and MLflow-free; also
  re-exported here, so ``from trainables.record import AUC_KEYS`` stays cheap);
- ``trial``: the one ``Trial`` type; ``selection``: the one ``best_of_arm`` rule;
- ``store``: the one MLflow client (URIs, retries, quoting, paging);
- ``writer``: the parent run and the trial runs, exactly once;
- ``reader``: a study read back (``Record``, ``Study``); ``files``: the artifact files.

Only ``store``, ``writer`` and ``reader`` import MLflow.
"""

from trainables.record.schema import *

"""Named hyperparameter search spaces: ``get_space(name)(arm) -> SearchSpace``.

Each space lives in its own module and registers itself on import (explicit imports below, as in
timm), so adding a space is one new module plus one import line.
"""

from search_spaces import demo, lr_only, paper  # noqa: F401  (registration)
from search_spaces.registry import (
    SEARCHABLE,
    FloatRange,
    SearchSpace,
    baseline_values,
    get_space,
    list_spaces,
    register_space,
)

__all__ = [
    "SEARCHABLE",
    "FloatRange",
    "SearchSpace",
    "baseline_values",
    "get_space",
    "list_spaces",
    "register_space",
]

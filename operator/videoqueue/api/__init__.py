"""The VideoQueue and VideoJob API (group videoqueue.dev, version v1alpha1).

These pydantic models are the single source of the CRD schemas (`videoqueue.api.crds`) and
of what the operator reads and writes. Wire names are camelCase, Python names snake_case;
`Model.model_validate(body)` reads an object, `model.to_dict()` writes one.
"""

# Each module says what it exports (`__all__`); the package exports all of it, once.
from videoqueue.api import (
    budgets,
    common,
    job,
    quantity,
    queue,
    queue_policies,
    queue_types,
    sizing,
    storage,
)
from videoqueue.api.budgets import *  # noqa: F403
from videoqueue.api.common import *  # noqa: F403
from videoqueue.api.job import *  # noqa: F403
from videoqueue.api.quantity import *  # noqa: F403
from videoqueue.api.queue import *  # noqa: F403
from videoqueue.api.queue_policies import *  # noqa: F403
from videoqueue.api.queue_types import *  # noqa: F403
from videoqueue.api.sizing import *  # noqa: F403
from videoqueue.api.storage import *  # noqa: F403

__all__ = [
    *budgets.__all__,
    *common.__all__,
    *job.__all__,
    *quantity.__all__,
    *queue.__all__,
    *queue_policies.__all__,
    *queue_types.__all__,
    *sizing.__all__,
    *storage.__all__,
]

"""videoqueue: a Kubernetes operator that runs video-processing work as priority-ordered jobs."""

__version__ = "0.1.0"

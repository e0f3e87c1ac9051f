"""The controller: kopf handlers, worker pods and status, thin glue around the scheduling core."""

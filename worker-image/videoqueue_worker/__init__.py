"""The videoqueue worker: runs one VideoJob attempt inside its pod with ffmpeg.

It reads the job from VIDEOQUEUE_JOB, reports progress to Redis when configured, and writes
its result (or what went wrong) to the termination-message path. It imports only the wire
contract (`videoqueue.api`), never kopf, the Kubernetes client or the controller.
"""

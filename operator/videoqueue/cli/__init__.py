"""`kubectl videoqueue`: the kubectl plugin for VideoQueues and VideoJobs.

Installed as the console script `kubectl-videoqueue`, which kubectl finds on PATH. It reads
the cluster the way kubectl does (KUBECONFIG, --kubeconfig, --context, -n) and talks to the
API server with the kubernetes client; queue order and estimated start times are computed
here from the objects (`estimate`), never stored.
"""

"""Serving runtimes: how a node starts and stops model replicas.

Today's one runtime is ``emulated`` (replicas simulated in the amd-smi emulator's state, with
synthetic request traffic). The ``process`` (vLLM under the node agent) and ``kubernetes``
(KServe) runtimes come with the serving issues, behind the same interface.
"""

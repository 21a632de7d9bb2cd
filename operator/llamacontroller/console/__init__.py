"""The web console at ``/ui``: every node's GPUs and slots, each LlamaModel's story, and (when the
settings allow) loads, unloads and switches written as LlamaModels.

``view.py`` builds what a page shows from the objects (pure); ``gpufacts.py`` reads a node agent's
per-GPU facts; ``traffic.py`` the gateway's request rates; ``session.py`` is who may look and write;
``forms.py`` turns a form into a LlamaModel; ``pages.py`` writes the HTML; ``source.py`` reads and
writes the objects (the cluster through kube/api.py), ``local.py`` the local runtime's files;
``routes.py`` serves it all.
"""

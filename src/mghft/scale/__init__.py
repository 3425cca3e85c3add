"""Labelling whole sticker catalogues: ``mghft predict`` and ``mghft interpret`` on Ray Data (``--engine ray``).

Ray is optional (``pip install 'mghft[ray]'``); nothing here imports it until a Ray run starts.
"""

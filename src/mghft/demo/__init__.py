"""The newcomer demo: a real sticker-like dataset from open-licence emoji artwork, described offline, trained,
evaluated against baselines, and used for a prediction, on a CPU in minutes (``mghft demo``; ``docs/demo.md``)."""

"""The review stage: a person sees the doubtful cases the rules left and decides fast.

- :mod:`.server`: a small local Flask app (plain HTML/JS/CSS in ``static/``, no build step) — a keyboard-driven
  gallery that pages through the catalog in JSON and loads thumbnails lazily, so 10,000 items stay interactive.
- :mod:`.decisions`: the append-only decision log (keep, reject, undo) that ``export`` honours.
- :mod:`.items`: what a gallery item is (a face crop, or a photo without a face) and the filtered, sorted lists.
- :mod:`.report`: ``review --list`` (a Rich table by reason) and ``review --html`` (one self-contained file).
"""

"""The job pipeline's pieces: the job folder layout and artifact table (``layout``), COLMAP model reading
(``colmap``), frame extraction (``frames``), video encoding (``video``), and what every entry point shares:
errors (``errors``), the one-line command-line parser (``cli``) and escaped, one-line log output (``logsafe``).
``run.py`` composes them into steps; the node (``runner``) imports the layout and the shared pieces.
"""

"""splatter's benchmarks: speed and memory figures with their targets, printed, never asserted.

    python -m bench                  # every available backend: load, render, peak memory, ratios
    python -m bench.gpu              # the CuPy backend against gsplat 1.4.0, in one process
    python -m bench.convert          # PLY → .splat against ply2splat 0.6.0

Run them from the repository root. They use the real scenes of ``$SPLATTER_SCENES`` (or
``../shared/scenes``) when present, and the built-in demo scene otherwise.
"""

"""splatter compute node: leases ``/splatter/colmap/v1`` tasks from DMS, runs ``run.py``, uploads the splat.

One module per remote service (``auth`` = DDS, ``dms`` = DMS, ``domain`` = the domain data server), plus the
task session (heartbeats), the node loop and the splatter runner itself. Wire details follow
``docs/protocol.md``.
"""
__version__ = "0.1.0"

"""Test support for the job pipeline (run.py): stand-in nerfstudio commands, tiny COLMAP models and MP4s."""

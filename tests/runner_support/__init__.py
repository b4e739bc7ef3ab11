"""Test support for the runner: a fake DDS/DMS/domain server and a stand-in run.py."""

"""Helpers shared by the test suite: certificates, free ports, real servers."""
